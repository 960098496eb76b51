"""``avsearch serve``: an ``.arch`` and its index over HTTP (FastAPI + uvicorn, the ``serve``
extra; nothing else in avsearch imports them).

Endpoints (JSON responses; errors are ``{"error": message}`` with a 4xx status):

* ``GET /health`` — ``{"status": "ok", "count": N}``; the only one open without the token.
* ``GET /describe`` — the model (arch_id, space, code length, modalities and their widths,
  steps) and the index (kind, exact or approximate, parameters, items, origin).
* ``POST /search`` — features of one or more items -> their ±1 codes and top-k neighbours
  (``id``, database ``index``, Hamming ``distance``; ties by database index).
* ``POST /add`` — features (and optional ``ids``, ``labels``) of new items: encoded, added,
  and the index, its ids and its sidecar rewritten atomically before the answer.

Features come as JSON ``{"features": {"visual": [[[...]]], ...}, "k": 10, "radius": 3,
"ids": [...], "labels": [[...]]}`` (one (items, steps, width) array per modality; for a model
of image data, one step, also (items, width): one vector per image), or as an
``.npz`` body (one array per modality, optional ``ids`` and ``labels``) or an ``.npy`` body
(models of one modality); ``k`` and ``radius`` may also be query parameters.

Bad input (malformed body, unknown or missing modality, wrong width or steps, NaN or
infinity, too many items, a body over the size limit, bad k or radius, duplicate ids) gets a
4xx with a message and leaves the index as it was: it is checked before the model runs, and
``add`` builds a grown copy of the index and swaps it in only once it is saved.
Requests are served one at a time (a lock around the model and the index).

**A cross-modal model** (the ``sptch`` space: a video tower and a text tower) is served with
one index per tower (``--index`` repeated; each built with ``avsearch index build ARCH
--modality NAME``, whose sidecar records the tower). A request holds items of *one*
modality and searches the index of the other (or of ``"target"``)::

    {"captions": ["a dog on a beach", ...], "k": 10}           # text, tokenized with the
                                                                # .arch's vocabulary
    {"features": {"text": [[4, 17, 9], ...]}}                   # token ids (items, L)
    {"features": {"text": [[[...]]]}}                           # or precomputed text features
    {"features": {"visual": [[[...]]]}, "target": "visual"}     # videos, searching videos

``/add`` puts the items into their own modality's index. Bad input (an unknown modality or
target, two modalities at once, a wrong width or number of frames, an empty caption, token
ids outside the vocabulary, NaN) gets a 4xx with a message, checked before the model runs.
"""
# no ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
# run time, and ``Request`` is imported inside create_app (so that importing this module, or
# avsearch, never imports the web framework), where string annotations could not resolve it
import argparse
import hmac
import os
import io
import ipaddress
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.data.dataset import as_sequences
from avsearch.data.text import DEFAULT_MAX_TOKENS, Vocabulary
from avsearch.errors import AvsearchInputError, DuplicateIdError

__all__ = ["Service", "create_app", "serve"]


class Problem(Exception):
    """A request that cannot be served: an HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Service:
    """The model and the index behind the endpoints, without HTTP (testable as it is)."""

    def __init__(self, arch_path: str, index_path: "str | os.PathLike | list[str]",
                 device: str = "auto", max_items: int = 256, max_bytes: int = 32 << 20,
                 max_k: int = 1000):
        from avsearch.arch import Architecture
        from avsearch.inference import resolve_device

        self.arch = Architecture.load(arch_path)
        space = self.arch.build_space()
        self.widths = {m: int(space.type_of(m).width) for m in space.modalities}
        # a cross-modal model: one index per tower, by the modality its sidecar records
        self.towers = list(space.towers)
        paths = [index_path] if isinstance(index_path, (str, os.PathLike)) else list(index_path)
        self.indexes = self._load_indexes(arch_path, paths)
        self.device = resolve_device(device)
        self.net = self.arch.network().to(self.device).eval()
        lengths = self.arch.provenance.get("lengths") or {}
        if self.towers:
            text = space.text_inputs[0]
            tokens = text in self.arch.provenance.get("tokens", space.text_inputs)
            words = (self.arch.provenance.get("vocabulary") or {}).get(text)
            max_len = int(space.config.get("max_len") or 0) or None
            # a caption is cut where the model's positions end (data sets cut at 64 tokens,
            # within the space's max_len, which is at least 64)
            self.text = {"modality": text, "tokens": tokens, "max_len": max_len,
                         "max_tokens": max_len or DEFAULT_MAX_TOKENS}
            self.vocabulary = None
            if tokens and words:
                self.vocabulary = Vocabulary.from_json(words)
            video = next(m for m in self.towers if m != text)
            steps = lengths.get(video) or self.arch.provenance.get("length")
        else:
            steps = (self.index.data or {}).get("steps") or self.arch.provenance.get("length")
        self.steps = int(steps) if steps else None        # None: any number of steps
        self.max_items, self.max_bytes, self.max_k = max_items, max_bytes, max_k
        self.lock = threading.Lock()

    def _load_indexes(self, arch_path: str, paths: list) -> dict:
        from avsearch.index import BinaryIndex

        if not self.towers and len(paths) != 1:
            raise AvsearchInputError(f"{arch_path} has one output: serve it with one index, "
                                     f"not {len(paths)}")
        indexes: dict = {}
        for path in paths:
            index = BinaryIndex.load(path)
            index.check_arch(self.arch, arch_path)
            if not self.towers:
                indexes[None] = index
                continue
            modality = (index.data or {}).get("modality")
            if modality not in self.towers:
                raise AvsearchInputError(
                    f"{path}: the index does not say which tower of {arch_path} made its codes "
                    f"(towers {', '.join(self.towers)}); rebuild it from {arch_path}, naming the "
                    f"tower's modality" if modality is None else
                    f"{path}: holds codes of modality {modality!r}, which {arch_path} has no "
                    f"tower of (towers {', '.join(self.towers)})")
            if modality in indexes:
                raise AvsearchInputError(f"{path}: a second index of the {modality} tower "
                                         f"(the first: {indexes[modality].path})")
            indexes[modality] = index
        return indexes

    @property
    def index(self) -> Any:
        """The index of a model with one output."""
        return self.indexes[None]

    def count(self) -> int:
        return sum(index.count for index in self.indexes.values())

    def describe(self) -> dict[str, Any]:
        bits = next(iter(self.indexes.values())).bits
        model = {"arch_id": self.arch.arch_id, "space": self.arch.space, "bits": bits,
                 "modalities": self.widths, "steps": self.steps,
                 "weights_sha256": self.arch.weights_sha256}
        limits = {"max_items": self.max_items, "max_bytes": self.max_bytes, "max_k": self.max_k}
        if not self.towers:
            return {"model": model, "index": {**self.index.describe(),
                                              "file": str(self.index.path)}, "limits": limits}
        text = {**self.text, "vocabulary": None if self.vocabulary is None
                else len(self.vocabulary)}
        return {"model": {**model, "towers": self.towers, "text": text},
                "indexes": {m: {**index.describe(), "file": str(index.path)}
                            for m, index in self.indexes.items()}, "limits": limits}

    # ---------------------------------------------------------------- requests
    def parse(self, body: bytes, content_type: str, query: dict[str, str]) -> dict[str, Any]:
        """A request body as ``{"features": {modality: (n, T, D) float32}, "k", "radius",
        "ids", "labels"}``, every field checked (:class:`Problem` 400/413 otherwise)."""
        if body[:6] == b"\x93NUMPY":
            fields = {"features": self._npy(body)}
        elif body[:4] == b"PK\x03\x04":
            fields = self._npz(body)
        elif "json" in content_type or body[:1] in (b"{", b" ", b"\n"):
            fields = self._json(body)
        else:
            raise Problem(415, "send JSON (Content-Type: application/json), an .npz or an .npy")
        for key in ("k", "radius", "target"):
            if key in query and key not in fields:
                fields[key] = query[key]
        if self.towers:
            self._cross_modal(fields)
        else:
            if "captions" in fields or "target" in fields:
                raise Problem(400, "captions and target are for a cross-modal model; this one "
                                   "has one output")
            fields["features"] = self._features(fields.get("features"))
        fields["k"] = self._integer(fields.get("k", 10), "k", 1, self.max_k)
        radius = fields.get("radius")
        bits = next(iter(self.indexes.values())).bits
        fields["radius"] = None if radius is None else self._integer(radius, "radius", 0, bits)
        return fields

    def _json(self, body: bytes) -> dict[str, Any]:
        import json
        try:
            fields = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise Problem(400, f"not valid JSON: {err}") from None
        if not isinstance(fields, dict):
            raise Problem(400, "the JSON body must be an object with 'features'")
        known = ["features", "k", "radius", "ids", "labels"]
        known += ["captions", "target"] if self.towers else []
        unknown = set(fields) - set(known)
        if unknown:
            raise Problem(400, f"unknown field(s) {sorted(unknown)} (fields: "
                               f"{', '.join(known)})")
        return fields

    def _npy(self, body: bytes) -> dict[str, Any]:
        if len(self.widths) != 1:
            raise Problem(400, f"an .npy holds one array and this model takes "
                               f"{', '.join(self.widths)}: send an .npz with one array each")
        return {next(iter(self.widths)): self._load(body, ".npy")}

    def _npz(self, body: bytes) -> dict[str, Any]:
        try:
            members = zipfile.ZipFile(io.BytesIO(body)).infolist()
        except zipfile.BadZipFile as err:
            raise Problem(400, f"not a readable .npz: {err}") from None
        # an .npz is a zip: check the sizes it unpacks to before unpacking anything
        if sum(m.file_size for m in members) > self.max_bytes:
            raise Problem(413, f"the .npz unpacks to more than {self.max_bytes} bytes")
        arrays = self._load(body, ".npz")
        fields: dict[str, Any] = {"features": {}}
        for name, value in arrays.items():
            if name in ("ids", "labels", "k", "radius", "target"):
                fields[name] = value.tolist()
            else:
                fields["features"][name] = value
        return fields

    def _load(self, body: bytes, what: str) -> Any:
        try:
            loaded = np.load(io.BytesIO(body), allow_pickle=False)
            if what == ".npz":
                with loaded:
                    return {key: loaded[key] for key in loaded.files}
            return loaded
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise Problem(400, f"not a readable {what} without pickles: {err}") from None

    def _features(self, features: Any) -> dict[str, np.ndarray]:
        if not isinstance(features, dict) or not features:
            raise Problem(400, f"'features' must map each modality ({', '.join(self.widths)}) "
                               f"to an (items, steps, width) array")
        unknown = [m for m in features if m not in self.widths]
        if unknown:
            raise Problem(400, f"unknown modality {unknown[0]!r} (this model takes "
                               f"{', '.join(self.widths)})")
        missing = [m for m in self.widths if m not in features]
        if missing:
            raise Problem(400, f"modality {missing[0]!r} is missing (this model takes "
                               f"{', '.join(self.widths)})")
        out, items = {}, None
        for modality, width in self.widths.items():      # the network's input order
            try:
                x = np.asarray(features[modality], dtype=np.float32)
            except (ValueError, TypeError):
                raise Problem(400, f"features of {modality!r} are not a numeric (items, "
                                   f"steps, {width}) array (ragged or not numbers)") from None
            steps = self.steps if self.steps is not None else "steps"
            if x.ndim == 2 and self.steps == 1:     # images: (items, width), one step each
                x = as_sequences(x)
            if x.ndim != 3 or x.shape[2] != width or min(x.shape) < 1:
                shape = (f"(items, {width}) or (items, 1, {width})" if self.steps == 1
                         else f"(items, {steps}, {width})")
                raise Problem(400, f"features of {modality!r} have shape {list(x.shape)}, "
                                   f"expected {shape}")
            if self.steps is not None and x.shape[1] != self.steps:
                raise Problem(400, f"features of {modality!r} have {x.shape[1]} steps, the "
                                   f"model was trained on {self.steps}")
            if items is not None and len(x) != items:
                raise Problem(400, f"modalities have different numbers of items "
                                   f"({items} and {len(x)})")
            items = len(x)
            if items > self.max_items:
                raise Problem(413, f"{items} items in one request; at most {self.max_items}")
            if not np.isfinite(x).all():
                raise Problem(400, f"features of {modality!r} hold NaN or infinity")
            out[modality] = x
        return out

    @staticmethod
    def _integer(value: Any, name: str, low: int, high: int) -> int:
        try:
            number = int(value)
            if isinstance(value, float) and number != value or isinstance(value, bool):
                raise ValueError
        except (TypeError, ValueError):
            raise Problem(400, f"{name} must be an integer, got {value!r}") from None
        if not low <= number <= high:
            raise Problem(400, f"{name} must be between {low} and {high}, got {number}")
        return number

    # ---------------------------------------------------------------- cross-modal requests
    def _cross_modal(self, fields: dict[str, Any]) -> None:
        """A cross-modal request's items of one modality, checked, as ``fields["features"]``
        ``{modality: array}`` (token ids int64 (n, L), else float32 (n, L, D)), and its
        ``fields["target"]``, the tower whose index it searches."""
        features, captions = fields.get("features"), fields.pop("captions", None)
        if (features is None) == (captions is None):
            raise Problem(400, f"send either 'captions' or 'features' of one modality "
                               f"({', '.join(self.towers)})")
        text = self.text["modality"]
        if captions is not None:
            modality, x = text, self._captions(captions)
        else:
            if not isinstance(features, dict) or len(features) != 1:
                raise Problem(400, f"'features' must hold one modality ({' or '.join(self.towers)}):"
                                   f" a request searches with the items of one tower")
            modality, value = next(iter(features.items()))
            if modality not in self.towers:
                raise Problem(400, f"unknown modality {modality!r} (this model's towers: "
                                   f"{', '.join(self.towers)})")
            x = self._text_input(value) if modality == text else self._video_input(value)
        if len(x) > self.max_items:
            raise Problem(413, f"{len(x)} items in one request; at most {self.max_items}")
        target = fields.get("target")
        if target is not None and target not in self.towers:
            raise Problem(400, f"unknown target {target!r} (this model's towers: "
                               f"{', '.join(self.towers)})")
        fields["features"], fields["modality"] = {modality: x}, modality

    def _served(self, modality: str, what: str) -> Any:
        if modality not in self.indexes:
            raise Problem(400, f"no index of the {modality} tower is served (served: "
                               f"{', '.join(self.indexes)}){what}")
        return self.indexes[modality]

    def _captions(self, captions: Any) -> np.ndarray:
        if self.vocabulary is None:
            raise Problem(400, "this model's text is " + (
                "precomputed features: send them as features" if not self.text["tokens"] else
                "token ids and its .arch carries no vocabulary: send token ids as features"))
        if isinstance(captions, str):
            captions = [captions]
        if not isinstance(captions, list) or not captions or \
                not all(isinstance(c, str) for c in captions):
            raise Problem(400, "'captions' must be a non-empty list of strings")
        ids = self.vocabulary.encode(captions, self.text["max_tokens"])
        empty = [i for i, row in enumerate(ids) if not row.any()] if ids.shape[1] else \
            list(range(len(captions)))
        if empty:
            raise Problem(400, f"caption {empty[0]} has no words")
        return ids.astype(np.int64)

    def _text_input(self, value: Any) -> np.ndarray:
        text, max_len = self.text["modality"], self.text["max_len"]
        width = self.widths[text]
        x = _finite(value, np.float64, text)
        if self.text["tokens"]:
            if x.ndim != 2 or min(x.shape) < 1:
                raise Problem(400, f"features of {text!r} have shape {list(x.shape)}, expected "
                                   f"token ids (items, tokens)")
            if (x != np.round(x)).any() or x.min() < 0 or x.max() >= width:
                raise Problem(400, f"token ids of {text!r} must be integers in [0, {width}) "
                                   f"(the vocabulary; 0 pads)")
            real = x != 0
        else:
            if x.ndim != 3 or x.shape[2] != width or min(x.shape) < 1:
                raise Problem(400, f"features of {text!r} have shape {list(x.shape)}, expected "
                                   f"(items, tokens, {width})")
            real = (x != 0).any(-1)
        if max_len and x.shape[1] > max_len:
            raise Problem(400, f"{x.shape[1]} tokens per item; the model's positions reach "
                               f"{max_len}")
        empty = np.flatnonzero(~real.any(1))
        if len(empty):
            raise Problem(400, f"caption {int(empty[0])} of {text!r} is empty (padding only)")
        return x.astype(np.int64 if self.text["tokens"] else np.float32)

    def _video_input(self, value: Any) -> np.ndarray:
        video = next(m for m in self.towers if m != self.text["modality"])
        width = self.widths[video]
        x = _finite(value, np.float32, video)
        steps = self.steps if self.steps is not None else "frames"
        if x.ndim != 3 or x.shape[2] != width or min(x.shape) < 1:
            raise Problem(400, f"features of {video!r} have shape {list(x.shape)}, expected "
                               f"(items, {steps}, {width})")
        if self.steps is not None and x.shape[1] != self.steps:
            raise Problem(400, f"features of {video!r} have {x.shape[1]} frames, the model was "
                               f"trained on {self.steps}")
        return x

    def encode(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """±1 codes of the items, through the same path as ``avsearch encode`` (a
        cross-modal model: the tower of the one modality given)."""
        if self.towers:
            import torch

            from avsearch.codes import binarize
            from avsearch.inference import autocast
            (modality, x), = features.items()
            with torch.no_grad(), autocast(self.device):
                z = self.net.tower(modality, torch.from_numpy(x).to(self.device)).float()
            return binarize(z).cpu().numpy()
        from avsearch.data import Split
        from avsearch.inference import encode_split
        n = len(next(iter(features.values())))
        split = Split([str(i) for i in range(n)], np.zeros((n, 0), dtype=bool), features)
        return encode_split(self.net, split, self.device)

    def search(self, fields: dict[str, Any]) -> dict[str, Any]:
        target = fields.get("target")
        if self.towers:   # by default the other tower's index
            target = target or next(m for m in self.towers if m != fields["modality"])
            self._served(target, "; set 'target'")
        with self.lock:
            codes = self.encode(fields["features"])
            index = self.indexes[target]
            result = index.search(codes, fields["k"], radius=fields["radius"])
            found = index.id_of(result.index)
        cross = {"modality": fields["modality"], "target": target} if self.towers else {}
        return {**cross, "search": index.method(), "exact": result.exact, "k": fields["k"],
                "radius": fields["radius"], "tie_break": "database index",
                "results": [{"code": code.tolist(), "neighbours": [
                    {"id": str(i), "index": int(j), "distance": int(d)}
                    for i, j, d in zip(ids, idx, dist) if j >= 0]}
                    for code, ids, idx, dist in zip(codes, found, result.index,
                                                    result.distance)]}

    def add(self, fields: dict[str, Any]) -> dict[str, Any]:
        ids, labels = fields.get("ids"), fields.get("labels")
        n = len(next(iter(fields["features"].values())))
        if ids is not None and (not isinstance(ids, list) or len(ids) != n
                                or not all(isinstance(i, str) and i for i in ids)):
            raise Problem(400, f"'ids' must be {n} non-empty strings, one per item")
        if labels is not None:
            try:
                labels = np.asarray(labels, dtype=np.float64)
            except (TypeError, ValueError):
                raise Problem(400, "'labels' must be an (items, classes) array of 0/1") from None
        into = fields.get("modality")           # a cross-modal model: the items' own tower's
        if self.towers:
            if fields.get("target") not in (None, into):
                raise Problem(400, f"add puts items into their own modality's index ({into}), "
                                   f"not {fields['target']}'s")
            self._served(into, "")
        with self.lock:
            codes = self.encode(fields["features"])
            index = self.indexes[into]
            try:
                grown = index.added(codes, ids=ids, labels=labels)
            except AvsearchInputError as err:
                raise Problem(409 if isinstance(err, DuplicateIdError) else 400, str(err)) from None
            try:
                grown.save(index.path)  # atomically; the served index is untouched until then
            except OSError as err:
                raise Problem(500, f"could not save the index ({err}); nothing was added") from None
            self.indexes[into] = grown
            added = grown.id_of(np.arange(grown.count - n, grown.count)).tolist()
        return {**({"modality": into} if self.towers else {}), "added": n, "count": grown.count,
                "ids": added}


def _finite(value: Any, dtype: Any, modality: str) -> np.ndarray:
    """``value`` as a numeric array without NaN or infinity (:class:`Problem` 400 otherwise)."""
    try:
        x = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError):
        raise Problem(400, f"features of {modality!r} are not a numeric array (ragged or not "
                           f"numbers)") from None
    if not np.isfinite(x).all():
        raise Problem(400, f"features of {modality!r} hold NaN or infinity")
    return x


def create_app(service: Service, token: str | None = None) -> Any:
    """The FastAPI application of ``service``; with ``token``, every endpoint but /health
    needs ``Authorization: Bearer TOKEN``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from avsearch import __version__

    app = FastAPI(title="avsearch", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(Problem)
    async def problem(request: Request, err: Problem) -> JSONResponse:
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(AvsearchInputError)
    async def bad_input(request: Request, err: AvsearchInputError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    def authorise(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Problem(401, "missing or wrong token (Authorization: Bearer TOKEN)")

    async def body_of(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise Problem(400, "bad Content-Length")
            if int(declared) > service.max_bytes:
                raise Problem(413, f"request body of {declared} bytes; at most "
                                   f"{service.max_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > service.max_bytes:
                raise Problem(413, f"request body over {service.max_bytes} bytes")
            chunks.append(chunk)
        if not size:
            raise Problem(400, "empty request body")
        return b"".join(chunks)

    async def fields_of(request: Request) -> dict[str, Any]:
        body = await body_of(request)
        return service.parse(body, request.headers.get("content-type", ""),
                             dict(request.query_params))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "count": service.count()}

    @app.get("/describe")
    async def describe(request: Request) -> dict[str, Any]:
        authorise(request)
        return service.describe()

    @app.post("/search")
    async def search(request: Request) -> dict[str, Any]:
        authorise(request)
        return await run_in_threadpool(service.search, await fields_of(request))

    @app.post("/add")
    async def add(request: Request) -> dict[str, Any]:
        authorise(request)
        return await run_in_threadpool(service.add, await fields_of(request))

    return app


def serve(args: argparse.Namespace) -> int:
    """``avsearch serve``: check the options, load, and run uvicorn until stopped."""
    for name in ("max_items", "max_k", "port"):
        if getattr(args, name) < (0 if name == "port" else 1):
            raise AvsearchInputError(f"{name} must be positive", name)
    if args.max_request_mb <= 0:
        raise AvsearchInputError("max_request_mb must be positive", "max_request_mb")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise AvsearchInputError("avsearch serve needs the 'serve' extra: "
                                 "pip install 'avsearch[serve]'") from None
    service = Service(args.arch, args.index, args.device, args.max_items,
                      int(args.max_request_mb * (1 << 20)), args.max_k)
    app = create_app(service, args.token)
    indexes = ", ".join(f"{index.path} ({index.method()}"
                        + (f", {m} tower)" if m else ")") for m, index in service.indexes.items())
    print(f"avsearch: serving {Path(args.arch).name} ({service.arch.arch_id}) and "
          f"{indexes} on http://{args.host}:{args.port}"
          + (" (token required)" if args.token else ""), file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
