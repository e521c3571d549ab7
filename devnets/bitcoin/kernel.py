"""Bitcoin Core's consensus engine (libbitcoinkernel via py-bitcoinkernel) as the devnet's validator.

Every block the devnet mines or is given goes through ``ChainstateManager.process_block``, whose
chainstate lives in ``<datadir>/regtest/kernel`` and survives restarts; every mempool input is
checked with the kernel's script interpreter (``ScriptPubkey.verify``) under all consensus flags.
"""

from __future__ import annotations

from pathlib import Path

import pbk
from pbk.script import PrecomputedTransactionData

SCRIPT_FLAGS = pbk.ScriptVerificationFlags.ALL


class BlockRejected(Exception):
    """The kernel found the block invalid.

    The kernel's C API reports a BlockValidationResult class, not Core's reject string; ``reason``
    is Core's BIP22 string where the class determines it, else the class name (e.g. "consensus").
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_REASONS = {
    "mutated": "bad-txnmrklroot",
    "missing_prev": "prev-blk-not-found",
    "invalid_prev": "bad-prevblk",
    "time_future": "time-too-new",
    "cached_invalid": "duplicate-invalid",
    "invalid_header": "high-hash",
}


def _reason(result: pbk.BlockValidationResult) -> str:
    name = result.name.lower()
    return _REASONS.get(name, name)


class Kernel:
    def __init__(self, datadir: Path):
        self._checked: dict[str, tuple[pbk.ValidationMode, pbk.BlockValidationResult]] = {}
        callbacks = pbk.ValidationInterfaceCallbacks(block_checked=self._on_block_checked)
        self._context = pbk.make_context(pbk.ChainType.REGTEST, validation_callbacks=callbacks)
        self._callbacks = callbacks  # the kernel holds raw pointers into these ctypes trampolines
        datadir.mkdir(parents=True, exist_ok=True)
        opts = pbk.ChainstateManagerOptions(self._context, str(datadir), str(datadir / "blocks"))
        opts.set_worker_threads_num(0)
        self.chainman = pbk.ChainstateManager(opts)
        self.consensus_params = pbk.ChainParameters(pbk.ChainType.REGTEST).consensus_params

    def close(self) -> None:
        """Release the chainstate (flushes it to disk and frees the directory lock)."""
        import gc

        del self.chainman
        gc.collect()

    def _on_block_checked(self, _user_data, block: pbk.Block, state: pbk.BlockValidationState) -> None:
        self._checked[str(block.block_hash)] = (state.validation_mode, state.block_validation_result)

    def genesis(self) -> bytes:
        chain = self.chainman.get_active_chain()
        return bytes(self.chainman.blocks[chain.block_tree_entries[0]])

    def tip_hash(self) -> str:
        chain = self.chainman.get_active_chain()
        return str(chain.block_tree_entries[chain.height].block_hash)

    def process_block(self, raw: bytes) -> bool:
        """Validate and store a block; raise BlockRejected when the kernel finds it invalid.

        Returns True when the kernel fully validated (connected) the block, False when it only
        stored it on a side branch with less work than its own tip: then header, context-free and
        contextual checks ran, while scripts and UTXO spends are checked when that branch wins.
        """
        block = pbk.Block(raw)
        state = block.check(self.consensus_params, pbk.BlockCheckFlags.ALL)
        if state.validation_mode != pbk.ValidationMode.VALID:
            raise BlockRejected(_reason(state.block_validation_result))
        block_hash = str(block.block_hash)
        self._checked.pop(block_hash, None)
        try:
            self.chainman.process_block(block)
        except pbk.ProcessBlockException:
            # Rejected before connection (e.g. ContextualCheckBlock: BIP34 height, witness commitment).
            checked = self._checked.pop(block_hash, None)
            raise BlockRejected(_reason(checked[1]) if checked else "rejected") from None
        checked = self._checked.pop(block_hash, None)
        if checked is not None and checked[0] != pbk.ValidationMode.VALID:
            raise BlockRejected(_reason(checked[1]))
        return checked is not None

    def verify_input(self, raw_tx: bytes, index: int, spent: list[tuple[int, bytes]]) -> bool:
        """Run the consensus script check for one input; ``spent`` lists (amount, scriptPubKey)."""
        ktx = pbk.Transaction(raw_tx)
        outputs = [pbk.TransactionOutput(pbk.ScriptPubkey(spk), amount) for amount, spk in spent]
        txdata = PrecomputedTransactionData(ktx, outputs)
        amount, spk = spent[index]
        return bool(pbk.ScriptPubkey(spk).verify(amount, ktx, txdata, index, SCRIPT_FLAGS))
