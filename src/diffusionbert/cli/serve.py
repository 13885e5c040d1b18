"""``diffusionbert serve``: a local web page that shows a model denoising text, step by step."""

from __future__ import annotations

import argparse

from .common import model_options


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to let the system pick a free one."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port; allowed: 0 (any free port) to 65535")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        parents=model_options(),
        help="a web page that shows a model denoising text live",
        description="Serve a page where each denoising step of the model appears as it is made: "
        "unconditional, prompt, infill, source or chat, as the model allows. Binds to this machine only "
        "unless --host says otherwise.",
    )
    p.add_argument("--checkpoint", required=True, help="model directory (a run's final/ or a checkpoint)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=port_number, default=7860, help="port (default 7860; 0: any free port)")
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="URL",
        help="a page that may use the server besides its own (scheme://host[:port]; repeatable): how a "
        "deliberate deployment names the address its users reach it by",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from ..apps.web import serve
    from ..checkpoint import load_model_dir
    from ..sampling import pipeline_for
    from ..utils.runtime import default_device

    loaded = load_model_dir(args.checkpoint, device=default_device(args.device))
    directory = loaded.directory.resolve()
    name = directory.parent.name if directory.name in ("final", "model") else directory.name
    title = f"{name} ({loaded.method.name} model)"  # the page is shown a name, never a path
    pipe = pipeline_for(loaded)
    if "chat" in pipe.modes:
        pipe.chat_decoding()  # a chat template that cannot serve a chat fails here, not at the first answer
    serve(pipe, title, args.host, args.port, tuple(args.allowed_origin))
