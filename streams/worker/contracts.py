"""The contracts of every model version this worker has seen, by digest: which labels an answer is in.

Each response carries, per row, the digest of the contract of the version that computed it (CONTRACT__1,
baked into the model file at export). The book maps digests to contracts read from the model config's
`artroute_contract.<N>` parameters; a digest it does not know (a version rolled out after the worker
started) makes it read the config again. A digest that no contract in the config has, or a contract the
worker cannot apply (another input size, an unknown resize mode), is an `UnknownContract`: those answers
are dead-lettered, never decided with another version's labels.
"""
from __future__ import annotations

import asyncio
import logging

from streams.contract.model import ModelContract
from streams.contract.retry import RetryPolicy, call_with_retries
from streams.worker.inference import ModelUnavailable, ServedModel, TritonModel

log = logging.getLogger(__name__)
CONFIG_LAG_S = 10.0
"""How long a digest the config does not know yet is looked for again (a config reload racing a version)."""


class UnknownContract(Exception):
    """An answer whose contract this worker cannot find or apply; the message says why."""


class ContractBook:
    def __init__(self, model: TritonModel, served: ServedModel, stop: asyncio.Event | None = None):
        self.model, self.stop = model, stop
        self.input_size = served.input_size
        self.by_digest: dict[bytes, ModelContract] = {}
        self._learn(served)
        self._lock = asyncio.Lock()

    def _learn(self, served: ServedModel) -> None:
        for version, contract in served.contracts.items():
            digest = contract.digest()
            if digest not in self.by_digest:
                log.info("model %s version %d: %d labels (%s), digest %s", contract.model_name, version,
                         len(contract.labels), contract.taxonomy, digest.hex()[:12])
            self.by_digest.setdefault(digest, contract)

    async def contract_for(self, digest: bytes, version: str) -> ModelContract:
        """The contract an answer with this digest (from this version) is in. Raises UnknownContract."""
        contract = self.by_digest.get(digest)
        if contract is None:
            contract = await self._look_up(digest, version)
        problem = contract.servable_problem(self.input_size)
        if problem:
            raise UnknownContract(f"version {version}: {problem}")
        return contract

    async def _look_up(self, digest: bytes, version: str) -> ModelContract:
        async def reread() -> ModelContract:
            async with self._lock:
                if digest not in self.by_digest:
                    self._learn(await self.model.wait_ready(self.stop))
            if digest not in self.by_digest:
                raise UnknownContract(f"version {version} answered with contract digest {digest.hex()[:12]}, "
                                      "which no contract in the model's config has (was the model loaded "
                                      "again after its export?)")
            return self.by_digest[digest]

        policy = RetryPolicy(what=f"contract of version {version}", initial_s=0.5, max_s=2.0,
                             deadline_s=CONFIG_LAG_S)
        try:
            return await call_with_retries(reread, transient=lambda e: isinstance(e, UnknownContract),
                                           policy=policy, stop=self.stop)
        except UnknownContract:
            if self.stop is not None and self.stop.is_set():  # shutting down: undecided, so redelivered
                raise ModelUnavailable(f"stopped while looking for the contract of version {version}") from None
            raise

