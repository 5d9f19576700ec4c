"""Run the scripted model standalone: `python -m app.scripted_model --host 127.0.0.1 --port 8100`."""

from __future__ import annotations

import argparse

import uvicorn

from app.scripted_model.server import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.scripted_model", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--log-level", default="info")
    arguments = parser.parse_args(argv)
    uvicorn.run(create_app(), host=arguments.host, port=arguments.port, log_level=arguments.log_level)


if __name__ == "__main__":
    main()
