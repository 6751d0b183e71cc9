"""Serve the curator console: review queue (keyboard), grid triage, ledger search, dead letters, model page.

Listens on ARTROUTE_CONSOLE_HOST:ARTROUTE_CONSOLE_PORT (127.0.0.1:8400) and uses the ledger database
ARTROUTE_LEDGER_URL directly (the same one `ledger run` ingests into and publishes verdicts from) and
the S3 store for the photos. Nobody gets in without logging in: local accounts
(`python -m streams console add-user NAME --role curator|admin`, in ARTROUTE_CONSOLE_USERS_FILE) and/or
OIDC single sign-on (ARTROUTE_CONSOLE_OIDC_*). Sessions are signed with ARTROUTE_CONSOLE_SECRET_KEY.
/healthz and /metrics are open for probes and Prometheus. See docs/console.md.

also: console serve (the same), console add-user, console remove-user, console bench
"""
from __future__ import annotations

import argparse
import logging

from streams.ledger.runner import load_settings
from streams.worker.cli import setup_logging

log = logging.getLogger("streams.console")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (default ARTROUTE_CONSOLE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default ARTROUTE_CONSOLE_PORT, 8400)")


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from streams.console.app import create_app

    settings = load_settings()
    update = {k: v for k, v in (("console_host", args.host), ("console_port", args.port)) if v is not None}
    settings = settings.model_copy(update=update)
    setup_logging(settings)
    app = create_app(settings)
    if settings.console_local_accounts and not app.state.users.names() and app.state.oidc is None:
        log.warning("no console accounts in %s yet: python -m streams console add-user NAME --role admin",
                    settings.console_users_file)
    log.info("curator console on http://%s:%d (ledger %s)", settings.console_host, settings.console_port,
             app.state.ledger.engine.url.render_as_string(hide_password=True))
    uvicorn.run(app, host=settings.console_host, port=settings.console_port, log_level="warning", access_log=False,
                proxy_headers=True, forwarded_allow_ips="*" if settings.console_public_url else "127.0.0.1")
    return 0
