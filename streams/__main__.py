"""python -m streams: the artroute streaming side — embedded stack, worker, replay, ledger, demo, benchmark."""
import sys

from streams.contract.cli import dispatch

COMMANDS = {
    "stack up": ("streams.stack.cli_up", "start Kafka (tansu), S3 (SeaweedFS) and Triton; Ctrl-C stops all"),
    "stack down": ("streams.stack.cli_down", "stop a stack started in the background"),
    "worker": ("streams.worker.cli", "run the routing worker (faust) against the configured servers"),
    "replay": ("streams.worker.replay", "publish intake events for every image in a bucket (back-catalog)"),
    "reconcile": ("streams.worker.reconcile", "find image objects with no outcome on Kafka and replay them (JSON)"),
    "demo": ("streams.orchestration.demo", "the whole job end to end on the embedded stack"),
    "bench": ("streams.orchestration.bench", "pipeline images/s vs the model in-process; latency; batch fill (JSON)"),
    "ledger run": ("streams.ledger.cli_run", "ingest decisions and dead letters into the ledger; publish verdicts"),
    "ledger serve": ("streams.ledger.cli_serve", "the ledger's HTTP/JSON API: review queue, verdicts, search, stats"),
    "ledger migrate": ("streams.ledger.cli_migrate", "create or upgrade the ledger database schema (Alembic)"),
    "ledger export": ("streams.ledger.export", "current departments of every object as CSV or Parquet"),
    "ledger stats": ("streams.ledger.cli_stats", "counts and live accuracy per model version and department"),
    "ledger bench": ("streams.orchestration.ledger_bench", "ledger ingest rate and review-queue latency (JSON)"),
    "bench faults": ("streams.orchestration.faultbench", "faults and hostile input on the stack: lost must be 0 (JSON)"),
    "bench reconcile": ("streams.orchestration.reconcilebench", "what a reconcile pass costs, extrapolated to 1M objects"),
    "settings": ("streams.worker.settings_cli", "print the settings table (env vars, defaults) or current values"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m streams", __doc__, COMMANDS))
