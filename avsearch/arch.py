"""``.arch`` files: a derived architecture as JSON (never pickle), see docs/architecture.md,
"Artifacts".

Loading checks the format tag, the space and its options, every choice, that the weights
file (when there is one) lies inside the ``.arch``'s folder and has a sha256, and (when weights
are read) that hash, and fails with an :class:`ArchError` that names the file. An ``.arch`` is
data from wherever it came from: it must not make avsearch read files elsewhere.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from avsearch._files import atomic_write, sha256_file
from avsearch.errors import ArchError, AvsearchInputError
from avsearch.graph import SearchSpace, arch_id_of

__all__ = ["FORMAT", "Architecture"]

FORMAT = "avsearch.arch/1"


@dataclass
class Architecture:
    """A derived architecture of a registered space, with optional weights and results."""

    space: str
    space_config: dict[str, Any]
    choices: dict[str, str]
    probabilities: dict[str, dict[str, float]] | None = None
    weights: str | None = None          # path relative to the .arch file
    weights_sha256: str | None = None
    arch_id: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)  # where it was loaded from

    @classmethod
    def from_space(cls, space: SearchSpace, choices: Mapping[str, str], **fields: Any) -> "Architecture":
        choices = space.validate(choices)
        return cls(space.name, dict(space.config), choices, arch_id=space.arch_id(choices), **fields)

    def build_space(self) -> SearchSpace:
        """The space this architecture's ``space_config`` describes; an option the config does
        not record (an older avsearch wrote it) takes the value it had then."""
        from avsearch.spaces import get_space, space_options
        before = {k: o.recorded_before for k, o in space_options(self.space).items()
                  if o.recorded_before is not None and k not in self.space_config}
        return get_space(self.space, **before, **self.space_config)

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        out = {"format": FORMAT, "space": self.space, "space_config": self.space_config,
               "choices": self.choices}
        if self.probabilities is not None:
            out["probabilities"] = self.probabilities
        if self.weights is not None:
            out["weights"] = self.weights
            out["weights_sha256"] = self.weights_sha256
        out.update(arch_id=self.arch_id, provenance=self.provenance, metrics=self.metrics)
        return out

    def save(self, path: str | os.PathLike) -> None:
        atomic_write(path, json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        self.path = Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Architecture":
        """Read and validate an ``.arch`` file (weights are checked by :meth:`load_weights`)."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ArchError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ArchError(f"{path}: cannot read: {err}") from None
        except json.JSONDecodeError as err:
            raise ArchError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        if not isinstance(raw, dict):
            raise ArchError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        if raw.get("format") != FORMAT:
            raise ArchError(f"{path}: format tag {raw.get('format')!r} is not {FORMAT!r}")
        for name, kind in (("space", str), ("space_config", dict), ("choices", dict)):
            if not isinstance(raw.get(name), kind):
                raise ArchError(f"{path}: field {name!r} missing or not a {kind.__name__}")
        arch = cls(raw["space"], raw["space_config"], raw["choices"], raw.get("probabilities"),
                   raw.get("weights"), raw.get("weights_sha256"), raw.get("arch_id", ""),
                   raw.get("provenance", {}), raw.get("metrics", {}), path)
        try:
            space = arch.build_space()
            arch.choices = space.validate(arch.choices)
            if arch.probabilities is not None:
                arch._check_probabilities(space)
        except AvsearchInputError as err:
            raise ArchError(f"{path}: {err}") from None
        arch._check_weights_field()
        expected = space.arch_id(arch.choices)
        # a file from an avsearch that did not know some of today's space options hashed the
        # options it recorded: its id is checked against those, and today's id replaces it
        written = arch_id_of(arch.space, raw["space_config"], arch.choices)
        if arch.arch_id and arch.arch_id not in (expected, written):
            raise ArchError(f"{path}: arch_id {arch.arch_id!r} does not match its choices "
                            f"({expected!r}); was the file edited?")
        arch.arch_id = expected
        return arch

    def _check_probabilities(self, space: SearchSpace) -> None:
        for cell, probs in self.probabilities.items():
            if cell not in space.cells or not isinstance(probs, dict):
                raise ArchError(f"probabilities: unknown cell {cell!r}")
            unknown = set(probs) - set(space.candidates(cell))
            if unknown:
                raise ArchError(f"probabilities of cell {cell!r}: unknown op(s) {sorted(unknown)}")

    # ---------------------------------------------------------------- weights
    def _check_weights_field(self) -> None:
        """A weights path relative to the .arch's folder that stays inside it (no absolute
        path, no ``..``, no link leading out), with its sha256."""
        if self.weights is None:
            return
        where = self.path or "architecture"
        if not isinstance(self.weights, str) or not self.weights:
            raise ArchError(f"{where}: field 'weights' must be a file name, got {self.weights!r}")
        rel = Path(self.weights)
        base = (self.path.parent if self.path is not None else Path.cwd()).resolve()
        if rel.is_absolute() or ".." in rel.parts or not (base / rel).resolve().is_relative_to(base):
            raise ArchError(f"{where}: weights path {self.weights!r} leaves the .arch's folder; "
                            f"weights must lie beside the .arch file")
        sha = self.weights_sha256
        if not (isinstance(sha, str) and len(sha) == 64 and set(sha) <= set("0123456789abcdef")):
            raise ArchError(f"{where}: weights {self.weights!r} without a sha256 "
                            f"(field 'weights_sha256'); refusing unverifiable weights")

    def weights_path(self) -> Path | None:
        if self.weights is None:
            return None
        self._check_weights_field()
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / self.weights

    def load_weights(self) -> dict[str, Any]:
        """The state dict of the derived network, after checking the file's sha256."""
        from safetensors.torch import load_file

        wpath = self.weights_path()
        where = self.path or "architecture"
        if wpath is None:
            raise ArchError(f"{where}: has no weights")
        if not wpath.is_file():
            raise ArchError(f"{where}: weights file {wpath} is missing")
        if sha256_file(wpath) != self.weights_sha256:
            raise ArchError(f"{where}: weights file {wpath} does not match its sha256 "
                            f"(corrupt or replaced)")
        try:
            return load_file(str(wpath))
        except Exception as err:  # safetensors raises its own error types
            raise ArchError(f"{wpath}: not a readable safetensors file ({err})") from None

    def network(self, weights: bool = True):
        """The frozen derived network (``fixed`` mode), with its weights when it has them."""
        from avsearch.supernet import compile_space

        net = compile_space(self.build_space(), "fixed", self.choices)
        if weights and self.weights is not None:
            net.inherit(self.load_weights())
        return net.eval()
