"""Saving the sandbox's data to a file, so a restarted sandbox keeps its batches."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from sandbox.state import SandboxState

#: The attributes that hold data; counters, faults and the lock start fresh.
DATA_FIELDS = (
    "seed",
    "package_target",
    "apex_companies",
    "apex_tokens",
    "flourish_companies",
    "flourish_keys",
    "package_index",
    "tenants",
    "ids",
    "created_at",
)


def save_state(state: SandboxState, path: Path) -> None:
    """Write the data atomically: a crash mid-write leaves the old file."""
    with state.lock:
        data = {name: getattr(state, name) for name in DATA_FIELDS}
        payload = pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_bytes(payload)
    os.replace(temporary, path)


def load_state(path: Path) -> SandboxState:
    """Read a file written by ``save_state``; only this sandbox's own files.

    The file is a pickle, so it must come from a trusted place: the sandbox
    writes it under the demo's state folder and reads nothing else.
    """
    data = pickle.loads(path.read_bytes())
    state = SandboxState(seed=data["seed"])
    for name in DATA_FIELDS:
        setattr(state, name, data[name])
    return state
