"""sandbox's HTTP API and its process entry (``python -m services.sandbox.api``).

Each caller (guest or user, from the verified token) sees only its own three areas. Uploads
are written in chunks to a temporary file in the owner's folder, counted against the limit,
and then renamed into place without replacing anything; a guest whose migration has started
can no longer write.

Known shortcoming: Starlette parses the multipart body before the route runs and spools the
file part to its own temporary file (in memory up to 1 MB, then on disk). A declared
``Content-Length`` over the limit is refused before that; a chunked body over the limit is
spooled by Starlette and only then refused. Parsing the stream ourselves would close that gap.
"""

import logging
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from services.sandbox import fence, paths
from services.sandbox.filesystem import Filesystem
from services.sandbox.sandbox_move import UPLOAD_PREFIX
from shared.api import DbSession, create_app, serve
from shared.errors import ApiError, not_found
from shared.identity import CurrentCaller
from shared.settings import Settings
from shared.tokens import Caller, JwksKeys, KeySource, verifier_for

log = logging.getLogger(__name__)

PREFIX = "/api/v1/sandbox"
CHUNK = 1024 * 1024
# Room for the multipart framing and the form's small fields around the file itself.


class Stored(BaseModel):
    area: str
    path: str
    size: int


class Item(BaseModel):
    path: str
    size: int
    modified_at: datetime


class Listing(BaseModel):
    items: list[Item]


router = APIRouter(prefix=PREFIX, tags=["sandbox"])


def _root(request: Request) -> Path:
    return request.app.state.settings.sandbox_root


def _area(name: str) -> str:
    try:
        return paths.area(name)
    except paths.UnknownArea as exc:
        raise ApiError(404, "unknown_area", str(exc)) from None


def _relative(value: str | None) -> tuple[str, ...]:
    try:
        return paths.relative(value)
    except paths.BadPath as exc:
        raise ApiError(400, "invalid_path", str(exc)) from None


def _name(value: str | None) -> str:
    try:
        return paths.name(value)
    except paths.BadPath as exc:
        raise ApiError(400, "invalid_path", f"file name: {exc}") from None


def _owner_dir(request: Request, caller: Caller) -> Path:
    return paths.owner_dir(_root(request), caller.kind, caller.id)


async def _refuse_if_fenced(session, caller: Caller) -> None:
    """Within the caller's transaction: a guest being migrated may no longer write."""
    if not caller.is_guest:
        return
    if not await fence.try_hold_shared(session, caller.id) or await fence.is_fenced(
        session, caller.id
    ):
        raise ApiError(403, "guest_migrated",
                       "this guest's files have moved to an account; log in to use them")


async def _refuse_migrated_reader(session, caller: Caller) -> None:
    """A migrated guest's files are the user's now: its token reads nothing here either."""
    if caller.is_guest:
        async with session.begin():
            if await fence.is_fenced(session, caller.id):
                raise ApiError(403, "guest_migrated",
                               "this guest's files have moved to an account; log in to use them")


@router.post("/{area}", status_code=201)
async def upload(area: str, caller: CurrentCaller, request: Request, session: DbSession,
                 file: UploadFile = File(...), path: str = Form("")) -> Stored:
    """Store a file in one of the caller's areas (optionally in a sub-folder ``path``).

    An existing file of the same name is never replaced: delete it first (409 otherwise).
    """
    area = _area(area)
    parts = _relative(path)
    name = _name(file.filename)
    async with session.begin():
        await _refuse_if_fenced(session, caller)
    owner = _owner_dir(request, caller)
    try:
        paths.ensure_dir(owner)
    except paths.LinkRefused as exc:
        raise ApiError(400, "invalid_path", str(exc)) from None
    temp = owner / f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
    try:
        size = await _receive(file, temp, request.app.state.settings.upload_max_bytes)
        async with session.begin():
            await _refuse_if_fenced(session, caller)
            await run_in_threadpool(_place, temp, owner, (area, *parts), name)
    except ApiError as exc:
        if exc.code == "guest_migrated":
            _remove_empty(owner)
        raise
    finally:
        _unlink_quietly(temp)
    log.info("file stored", extra={"owner_kind": caller.kind, "area": area, "size": size})
    return Stored(area=area, path="/".join((*parts, name)), size=size)


async def _receive(file: UploadFile, temp: Path, limit: int) -> int:
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    size = 0
    try:
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"files may be at most {limit} bytes")
            await run_in_threadpool(_write_all, fd, chunk)
        await run_in_threadpool(os.fsync, fd)
    finally:
        os.close(fd)
    return size


def _write_all(fd: int, chunk: bytes) -> None:
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view):]


def _place(temp: Path, owner: Path, parts: tuple[str, ...], name: str) -> None:
    try:
        folder = paths.ensure_dir(owner, parts)
    except paths.LinkRefused as exc:
        raise ApiError(400, "invalid_path", str(exc)) from None
    except (NotADirectoryError, FileExistsError):
        raise ApiError(409, "path_conflict", "a file stands where a folder is needed") from None
    try:
        Filesystem().rename(temp, folder / name)
    except FileExistsError:
        raise ApiError(409, "exists", "a file of that name exists; delete it first") from None
    except IsADirectoryError:
        raise ApiError(409, "path_conflict", "a folder of that name exists") from None


@router.get("/{area}")
async def listing(area: str, caller: CurrentCaller, request: Request,
                  session: DbSession) -> Listing:
    """Every file in one of the caller's areas, with paths relative to the area."""
    area = _area(area)
    await _refuse_migrated_reader(session, caller)
    base = _owner_dir(request, caller) / area
    items = await run_in_threadpool(_items, base)
    return Listing(items=items)


def _items(base: Path) -> list[Item]:
    if not (_is_real_dir(base.parent) and _is_real_dir(base)):
        return []
    items = [
        Item(path=rel, size=info.st_size,
             modified_at=datetime.fromtimestamp(info.st_mtime, UTC))
        for rel, info in paths.walk_files(base)
    ]
    return sorted(items, key=lambda item: item.path)


@router.get("/{area}/{path:path}")
async def download(area: str, path: str, caller: CurrentCaller, request: Request,
                   session: DbSession) -> Response:
    """Download one of the caller's files, streamed."""
    area = _area(area)
    parts = _relative(path)
    if not parts:
        raise ApiError(400, "invalid_path", "name a file")
    await _refuse_migrated_reader(session, caller)
    fd, size = _open_file(_owner_dir(request, caller), (area, *parts))
    disposition = f"attachment; filename*=UTF-8''{quote(parts[-1], safe='')}"
    return StreamingResponse(_chunks(fd), media_type="application/octet-stream",
                             headers={"Content-Length": str(size),
                                      "Content-Disposition": disposition})


def _open_file(owner: Path, parts: tuple[str, ...]) -> tuple[int, int]:
    try:
        info = paths.existing(owner, parts)
        if not stat.S_ISREG(info.st_mode):
            raise FileNotFoundError
        fd = os.open(owner.joinpath(*parts), os.O_RDONLY | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError, paths.LinkRefused, OSError):
        raise not_found("file") from None
    return fd, os.fstat(fd).st_size


def _chunks(fd: int) -> Iterator[bytes]:
    with open(fd, "rb") as reader:
        while chunk := reader.read(CHUNK):
            yield chunk


@router.delete("/{area}/{path:path}", status_code=204)
async def delete(area: str, path: str, caller: CurrentCaller, request: Request,
                 session: DbSession) -> Response:
    """Delete one of the caller's files."""
    area = _area(area)
    parts = _relative(path)
    if not parts:
        raise ApiError(400, "invalid_path", "name a file")
    owner = _owner_dir(request, caller)
    async with session.begin():
        await _refuse_if_fenced(session, caller)
        try:
            info = paths.existing(owner, (area, *parts))
            if not stat.S_ISREG(info.st_mode):
                raise FileNotFoundError
            os.unlink(owner.joinpath(area, *parts))
        except (FileNotFoundError, NotADirectoryError, paths.LinkRefused):
            raise not_found("file") from None
    return Response(status_code=204)


def _is_real_dir(path: Path) -> bool | None:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None


def _remove_empty(owner: Path) -> None:
    """A refused guest upload may have re-made empty folders behind the move: remove them."""
    for folder in [*(owner / area for area in paths.AREAS), owner]:
        try:
            os.rmdir(folder)
        except OSError:
            pass


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def build(settings: Settings, keys: KeySource | None = None) -> FastAPI:
    def prepare(app: FastAPI) -> None:
        app.state.verifier = verifier_for(settings, keys or JwksKeys(settings.auth_url))

    return create_app("sandbox", settings, router, prepare)


if __name__ == "__main__":
    settings = Settings()
    serve(build(settings), "sandbox-api", settings, settings.sandbox_port)
