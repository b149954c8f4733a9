"""`onnxlrp web`: the web app (the zoo's relevance graphs run by onnxruntime-web in the browser)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "web",
        help="serve the web app on 127.0.0.1 (heatmaps computed in the browser), or export it",
        description="Compile the zoo's models under a few rules (with their inner layers exposed) and "
        "serve the web app on 127.0.0.1, or write it as a static site with --export. Needs "
        "onnxruntime-web from npm: `npm install onnxruntime-web@1.30.0` in the current folder (or "
        "set ONNXLRP_ORT_WEB to its dist folder).",
    )
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    parser.add_argument("--export", metavar="DIR", help="write the static site to DIR instead of serving it")
    parser.add_argument("--force", action="store_true", help="replace an existing --export folder")
    parser.add_argument(
        "--model", action="append", metavar="NAME", help="a zoo model to include (repeatable; default all)"
    )
    parser.add_argument(
        "--rule",
        action="append",
        metavar="R",
        help="a composite or rule to offer (repeatable; default epsilon, epsilon-plus, epsilon-gamma-box)",
    )
    parser.add_argument("--ort-web", metavar="DIR", help="onnxruntime-web's dist folder (default: found)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from onnxlrp.web import DEFAULT_RULES, build_site, make_server

    rules = args.rule or DEFAULT_RULES
    if args.export:
        site = build_site(args.export, models=args.model, rules=rules, ort_web=args.ort_web, force=args.force)
        print(f"wrote the web app to {site}; serve it with COOP/COEP headers (see the README, Deploying)")
        return 0
    with tempfile.TemporaryDirectory(prefix="onnxlrp-web-") as folder:
        site = build_site(Path(folder) / "site", models=args.model, rules=rules, ort_web=args.ort_web)
        server = make_server(site, args.port)
        print(
            f"onnxlrp web app on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops it)", flush=True
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0
