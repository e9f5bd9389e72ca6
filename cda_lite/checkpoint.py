"""Checkpoints that can be trusted: atomic, checksummed, finite, rotated, tied to their configuration.

- :func:`atomic_save` / :func:`atomic_write_json`: write to a temporary file in the same folder, then
  ``os.replace`` — a crash mid-write never leaves a half-written file where the last good one was.
- :func:`save_checkpoint`: one file = a JSON header line (the run's step and resolved configuration, the
  payload's length, a SHA-256 over configuration and payload) followed by the ``torch.save`` payload. The last ``keep`` files are
  kept (``run.pt`` newest, then ``run.1.pt`` ...). Non-finite tensors are refused
  (:class:`NonFiniteError`): a NaN never becomes the "last good" checkpoint.
- :func:`load_checkpoint`: verifies the checksum; a corrupt or truncated file is named in one line and
  the previous good one is used (:class:`CorruptCheckpointError` when none is left).
- :func:`config_diff`: the fields in which a saved configuration differs from the requested one, so that
  a resume under another configuration is refused (:class:`ConfigMismatchError`) unless forced.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import warnings

import torch

from cda_lite._checks import UserError
from cda_lite.errors import NonFiniteError  # noqa: F401 (raised here; defined beneath the layers)

MAGIC = b"CDA-LITE-CHECKPOINT 1\n"
DEFAULT_KEEP = 2


class CheckpointError(UserError):
    """A checkpoint cannot be used (missing, corrupt, written under another configuration)."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, altered or not a checkpoint; ``path`` names it."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


class ConfigMismatchError(CheckpointError):
    """Resuming under another configuration; ``fields`` lists the differences."""

    def __init__(self, message: str, fields: list):
        super().__init__(message)
        self.fields = fields


# --------------------------------------------------------------------------- atomic writes
def _default_mode() -> int:
    """0666 & ~umask: the mode an ordinary open() gives (``mkstemp`` alone leaves 0600)."""
    m = os.umask(0o022)
    os.umask(m)
    return 0o666 & ~m


def atomic_write(path: str, write, suffix: str = "", before_replace=None) -> None:
    """Write ``path`` atomically: ``write(f)`` into a temporary file in the same folder, fsync, give it
    the mode an ordinary ``open`` would (0666 & ~umask), call ``before_replace()`` (e.g. rotate the
    older copies), then ``os.replace`` — a crash leaves either the old file or the new one, never half."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_save(obj, path: str) -> None:
    """torch.save ``obj`` to ``path`` atomically (no header: caches and model files)."""
    atomic_write(path, lambda f: torch.save(obj, f), ".pt")


def atomic_write_json(obj, path: str) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, default=str).encode()), ".json")


# --------------------------------------------------------------------------- finiteness
def nonfinite_tensors(named) -> list[str]:
    """Names of the floating tensors in ``named`` ((name, tensor) pairs) holding NaN or inf."""
    bad = []
    for name, t in named:
        if t is not None and torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(name)
    return bad


def stop_message(what: str, step: int, checkpoint: str | None) -> str:
    """The one-line reason a run stopped on a non-finite value, naming the checkpoint to resume from."""
    where = (f"the last finite checkpoint is {checkpoint}; resume from it" if checkpoint
             else "no checkpoint was written yet")
    return f"non-finite {what} after step {step}: the run stops here, nothing non-finite is saved; {where}"


def check_finite_step(loss, params, step: int, checkpoint: str | None) -> None:
    """Raise :class:`NonFiniteError` unless the loss, the parameters and their gradients are finite."""
    if loss is not None and not math.isfinite(float(loss)):
        raise NonFiniteError(stop_message(f"loss ({float(loss)})", step, checkpoint), checkpoint)
    params = list(params)
    bad = nonfinite_tensors((f"gradient of parameter {i}", p.grad) for i, p in enumerate(params))
    bad += nonfinite_tensors((f"parameter {i}", p) for i, p in enumerate(params))
    if bad:
        more = f" (+{len(bad) - 2} more)" if len(bad) > 2 else ""
        raise NonFiniteError(stop_message(", ".join(bad[:2]) + more, step, checkpoint), checkpoint)


def _nonfinite_in(obj, prefix: str = "") -> list[str]:
    if torch.is_tensor(obj):
        return nonfinite_tensors([(prefix or "tensor", obj)])
    if isinstance(obj, dict):
        return [n for k, v in obj.items() for n in _nonfinite_in(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [n for i, v in enumerate(obj) for n in _nonfinite_in(v, f"{prefix}[{i}]")]
    if isinstance(obj, float) and not math.isfinite(obj):
        return [prefix]
    return []


# --------------------------------------------------------------------------- rotated, checksummed files
def previous(path: str, i: int) -> str:
    """The i-th older checkpoint next to ``path`` (i = 0 is ``path``): run.pt → run.1.pt, run.2.pt ..."""
    if i == 0:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.{i}{ext or '.pt'}"


def candidates(path: str, keep: int = 8) -> list[str]:
    """Existing checkpoints at ``path`` and its older rotations, newest first."""
    return [previous(path, i) for i in range(keep) if os.path.exists(previous(path, i))]


def exists(path: str) -> bool:
    """Whether ``path`` or one of its rotations exists (a crash between rotation and write leaves only those)."""
    return bool(candidates(path))


def save_checkpoint(state: dict, path: str, config: dict | None = None, keep: int = DEFAULT_KEEP) -> None:
    """Write ``state`` with its checksum and ``config`` atomically, keeping the ``keep`` newest files.
    Refuses (``NonFiniteError``) a state with a NaN or inf anywhere in its tensors."""
    bad = _nonfinite_in(state)
    if bad:
        raise NonFiniteError(f"refusing to save a non-finite state to {path} ({', '.join(bad[:3])})", None)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    meta = {"step": state.get("step"), "config": _plain(config)}
    header = {"sha256": _digest(meta, payload), "bytes": len(payload), **meta}
    head = json.dumps(header, default=str, sort_keys=True).encode() + b"\n"

    def write(f):
        f.write(MAGIC)
        f.write(head)
        f.write(payload)

    atomic_write(path, write, ".pt", before_replace=lambda: _rotate(path, keep))


def _rotate(path: str, keep: int) -> None:
    """run.1.pt → run.2.pt ..., then run.pt → run.1.pt through a hard link, so that ``path`` itself never
    disappears (a kill at any moment leaves the newest complete checkpoint at ``path``)."""
    for i in range(max(int(keep), 1) - 1, 1, -1):
        if os.path.exists(previous(path, i - 1)):
            os.replace(previous(path, i - 1), previous(path, i))
    if keep > 1 and os.path.exists(path):
        link = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-link-{os.getpid()}.pt")
        try:
            if os.path.exists(link):
                os.remove(link)
            os.link(path, link)
            os.replace(link, previous(path, 1))
        except OSError:  # no hard links on this file system: a plain rename (``exists`` covers the gap)
            os.replace(path, previous(path, 1))


def _digest(meta: dict, payload: bytes) -> str:
    """SHA-256 over the header's step and configuration (canonical JSON) and the payload."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    h.update(payload)
    return h.hexdigest()


def _read(path: str, payload: bool = True):
    """(header, state) of one file (state None without ``payload``: checksum verified, nothing unpickled);
    raises CorruptCheckpointError naming the file."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(MAGIC))
            if magic != MAGIC:  # a plain torch.save file (older checkpoints): no checksum to verify
                f.seek(0)
                try:
                    state = torch.load(f, map_location="cpu", weights_only=False)
                except Exception as e:
                    raise CorruptCheckpointError(f"checkpoint {path} is corrupt or not a checkpoint "
                                                 f"({type(e).__name__})", path) from None
                if not isinstance(state, dict):
                    raise CorruptCheckpointError(f"checkpoint {path} is not a training checkpoint", path)
                return {"config": state.get("config"), "step": state.get("step"), "legacy": True}, state
            line = f.readline()
            try:
                header = json.loads(line)
                n, digest = int(header["bytes"]), str(header["sha256"])
            except (ValueError, KeyError, TypeError):
                raise CorruptCheckpointError(f"checkpoint {path} is corrupt (unreadable header)", path) from None
            data = f.read()
    except IsADirectoryError:
        raise CorruptCheckpointError(f"checkpoint {path} is a folder, not a file", path) from None
    if len(data) != n:
        raise CorruptCheckpointError(f"checkpoint {path} is truncated ({len(data)} of {n} bytes)", path)
    if _digest({"step": header.get("step"), "config": header.get("config")}, data) != digest:
        raise CorruptCheckpointError(f"checkpoint {path} is corrupt (checksum mismatch)", path)
    if not payload:  # verified, not unpickled
        return header, None
    return header, torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


def load_checkpoint(path: str, fallback: bool = True) -> tuple[dict, dict, str]:
    """(state, header, path used): the newest intact checkpoint among ``path`` and its rotations.
    A corrupt file is reported in one warning line and the previous one is used (``fallback``)."""
    found = candidates(path) if fallback else ([path] if os.path.exists(path) else [])
    if not found:
        raise CheckpointError(f"no checkpoint at {path}")
    errors = []
    for p in found:
        try:
            header, state = _read(p)
        except CorruptCheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            warnings.warn(f"{errors[-1]}; using the previous checkpoint {p} (step {header.get('step')})",
                          RuntimeWarning, stacklevel=2)
        return state, header, p
    raise CorruptCheckpointError("; ".join(errors) + ("" if len(found) > 1 else "; no older checkpoint to use"),
                                 found[0])


def read_header(path: str) -> dict | None:
    """The header (step, configuration; ``legacy`` for files without one) of the newest intact checkpoint
    at ``path``, checksum verified without unpickling the state; None when there is none, and
    :class:`CorruptCheckpointError` when every file there is corrupt."""
    errors = []
    for p in candidates(path):
        try:
            return _read(p, payload=False)[0]
        except CorruptCheckpointError as e:
            errors.append(str(e))
    if errors:
        raise CorruptCheckpointError("; ".join(errors), path)
    return None


def read_config(path: str) -> dict | None:
    """The configuration stored with the newest intact checkpoint at ``path`` (see :func:`read_header`)."""
    header = read_header(path)
    return None if header is None else header.get("config")


def load(path: str):
    """The state of the checkpoint at ``path`` (checksum verified; no fallback to older files)."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    return _read(path)[1]


# --------------------------------------------------------------------------- configuration
def config_diff(saved, requested, ignore=(), prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two JSON-like configurations (keys in ``ignore``
    are skipped at any depth)."""
    saved, requested = _plain(saved), _plain(requested)
    if isinstance(saved, dict) and isinstance(requested, dict):
        out = []
        for k in sorted(set(saved) | set(requested), key=str):
            if k in ignore:
                continue
            name = f"{prefix}.{k}" if prefix else str(k)
            if k not in saved or k not in requested:
                out.append(name)
            else:
                out += config_diff(saved[k], requested[k], ignore, name)
        return out
    return [] if saved == requested else [prefix or "configuration"]


def _plain(obj):
    """JSON round trip: tuples become lists, numpy scalars numbers (as they are in a saved header)."""
    return json.loads(json.dumps(obj, default=str, sort_keys=True))


def check_resume_config(saved, requested, path: str, ignore=(), force: bool = False,
                        fresh_flag: str = "--fresh", force_flag: str = "--force-resume") -> list[str]:
    """Refuse (:class:`ConfigMismatchError`) to resume ``path`` under a configuration that differs in a
    field that changes the run; with ``force`` only warn. Returns the differing fields."""
    if saved is None:
        return []
    fields = config_diff(saved, requested, ignore)
    if fields and not force:
        raise ConfigMismatchError(
            f"{path} was written under another configuration (differs in: {', '.join(fields)}); "
            f"pass {fresh_flag} to start afresh or {force_flag} to continue it anyway", fields)
    if fields:
        warnings.warn(f"resuming {path} under another configuration (differs in: {', '.join(fields)})",
                      RuntimeWarning, stacklevel=2)
    return fields
