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
"""
# no ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
# run time, and ``Request`` is imported inside create_app (so that importing this module, or
# avsearch, never imports the web framework), where string annotations could not resolve it
import argparse
import hmac
import io
import ipaddress
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from avsearch.data.dataset import as_sequences
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

    def __init__(self, arch_path: str, index_path: str, device: str = "auto",
                 max_items: int = 256, max_bytes: int = 32 << 20, max_k: int = 1000):
        from avsearch.arch import Architecture
        from avsearch.index import BinaryIndex
        from avsearch.inference import resolve_device

        self.arch = Architecture.load(arch_path)
        self.index = BinaryIndex.load(index_path)
        self.index.check_arch(self.arch, arch_path)
        self.device = resolve_device(device)
        self.net = self.arch.network().to(self.device)
        space = self.arch.build_space()
        self.widths = {m: int(space.type_of(m).width) for m in space.modalities}
        steps = (self.index.data or {}).get("steps") or self.arch.provenance.get("length")
        self.steps = int(steps) if steps else None        # None: any number of steps
        self.max_items, self.max_bytes, self.max_k = max_items, max_bytes, max_k
        self.lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"model": {"arch_id": self.arch.arch_id, "space": self.arch.space,
                          "bits": self.index.bits, "modalities": self.widths,
                          "steps": self.steps, "weights_sha256": self.arch.weights_sha256},
                "index": {**self.index.describe(), "file": str(self.index.path)},
                "limits": {"max_items": self.max_items, "max_bytes": self.max_bytes,
                           "max_k": self.max_k}}

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
        for key in ("k", "radius"):
            if key in query and key not in fields:
                fields[key] = query[key]
        fields["features"] = self._features(fields.get("features"))
        fields["k"] = self._integer(fields.get("k", 10), "k", 1, self.max_k)
        radius = fields.get("radius")
        fields["radius"] = None if radius is None else self._integer(radius, "radius", 0,
                                                                     self.index.bits)
        return fields

    def _json(self, body: bytes) -> dict[str, Any]:
        import json
        try:
            fields = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise Problem(400, f"not valid JSON: {err}") from None
        if not isinstance(fields, dict):
            raise Problem(400, "the JSON body must be an object with 'features'")
        unknown = set(fields) - {"features", "k", "radius", "ids", "labels"}
        if unknown:
            raise Problem(400, f"unknown field(s) {sorted(unknown)} (fields: features, k, "
                               f"radius, ids, labels)")
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
            if name in ("ids", "labels", "k", "radius"):
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

    def encode(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """±1 codes of the items, through the same path as ``avsearch encode``."""
        from avsearch.data import Split
        from avsearch.inference import encode_split
        n = len(next(iter(features.values())))
        split = Split([str(i) for i in range(n)], np.zeros((n, 0), dtype=bool), features)
        return encode_split(self.net, split, self.device)

    def search(self, fields: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            codes = self.encode(fields["features"])
            index = self.index
            result = index.search(codes, fields["k"], radius=fields["radius"])
            found = index.id_of(result.index)
        return {"search": index.method(), "exact": result.exact, "k": fields["k"],
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
        with self.lock:
            codes = self.encode(fields["features"])
            try:
                grown = self.index.added(codes, ids=ids, labels=labels)
            except AvsearchInputError as err:
                raise Problem(409 if isinstance(err, DuplicateIdError) else 400, str(err)) from None
            try:
                grown.save(self.index.path)  # atomically; self.index is untouched until then
            except OSError as err:
                raise Problem(500, f"could not save the index ({err}); nothing was added") from None
            self.index = grown
            added = grown.id_of(np.arange(grown.count - n, grown.count)).tolist()
        return {"added": n, "count": grown.count, "ids": added}


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
        return {"status": "ok", "count": service.index.count}

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
    print(f"avsearch: serving {Path(args.arch).name} ({service.arch.arch_id}) and "
          f"{args.index} ({service.index.method()}) on http://{args.host}:{args.port}"
          + (" (token required)" if args.token else ""), file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
