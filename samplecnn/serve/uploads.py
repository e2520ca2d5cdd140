"""Audio sent to the server, received safely into the request's own temporary folder.

Uploads are streamed to disk as they arrive and counted against the caps; archives are
checked member by member before anything is extracted (no absolute paths, no ``..``, no
links, a cap on the unpacked size and the file count), then unpacked by the same code as
predict.py's. Nothing is written anywhere but the folder given, which the caller removes.
"""
import dataclasses
import re
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from python_multipart.multipart import MultipartParser, parse_options_header

from samplecnn import files
from samplecnn.audio import is_audio_file

MB = 1 << 20


class RequestError(Exception):
    """A request that cannot be answered as sent: ``status`` is the HTTP status to answer with."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    """Caps on what one request may send or make the server fetch and unpack."""

    max_upload_bytes: int = 200 * MB
    max_files: int = 100
    max_unpacked_bytes: int = 1000 * MB
    allow_urls: bool = False
    url_timeout: float = 30.0


def safe_name(name, fallback="upload"):
    """A file name to write a client's name as: its last path component, with characters other
    than letters, digits, ``.``, ``-`` and ``_`` replaced (the extension is kept for decoding)."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = re.sub(r"[^\w.-]+", "_", base).lstrip(".")[-120:]
    return base or fallback


class _Parts:
    """Multipart callbacks writing each file part to ``folder/<n>/<name>`` while counting bytes."""

    def __init__(self, folder, limits):
        self.folder, self.limits = folder, limits
        self.saved, self.received = [], 0  # saved: [(path on disk, client's file name)]
        self._header, self._value, self._headers, self._file = b"", b"", {}, None
        self._field = None

    def callbacks(self):
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data,
                "on_part_end": self._end}

    def _begin(self):
        self._headers, self._header, self._value, self._field = {}, b"", b"", None

    def _header_field(self, data, start, end):
        self._header += data[start:end]

    def _header_value(self, data, start, end):
        self._value += data[start:end]

    def _header_end(self):
        self._headers[self._header.decode("latin-1").lower()] = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self):
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        filename = options.get(b"filename")
        if filename is None:
            self._field = options.get(b"name", b"").decode("utf-8", "replace")
            return
        if len(self.saved) >= self.limits.max_files:
            raise RequestError(413, f"more than {self.limits.max_files} files in one request (--max-files); "
                                   "send them in several requests")
        name = filename.decode("utf-8", "replace")
        target = self.folder / str(len(self.saved)) / safe_name(name)
        target.parent.mkdir()
        self._file = open(target, "wb")
        self.saved.append((target, name))

    def _data(self, data, start, end):
        self.received += end - start
        if self.received > self.limits.max_upload_bytes:
            raise RequestError(413, f"the upload is larger than {self.limits.max_upload_bytes / MB:g} MB "
                                   "(--max-upload-mb); send fewer or smaller files")
        if self._file is not None:
            self._file.write(data[start:end])

    def _end(self):
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._field is not None:
            raise RequestError(400, f"form field {self._field!r} is not a file: send audio as file parts "
                                   "(curl -F 'file=@clip.wav'); options go in the query string (?top_k=3)")

    def close(self):
        if self._file is not None:
            self._file.close()


async def receive(request, folder, limits):
    """The audio of a request, saved below ``folder``: [(path, name to show)].

    Takes ``multipart/form-data`` file parts, or a JSON ``{"url": ...}`` when URLs are allowed.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    length = request.headers.get("content-length")
    stream = request.stream()
    if length and length.isdigit() and int(length) > limits.max_upload_bytes + MB:  # + room for the part headers
        await _drain(stream)
        raise RequestError(413, f"the upload ({int(length) / MB:.1f} MB) is larger than "
                               f"{limits.max_upload_bytes / MB:g} MB (--max-upload-mb); send fewer or smaller files")
    if content_type == b"application/json":
        return [await _fetch_json_url(request, folder, limits)]
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise RequestError(415, "send audio as multipart/form-data file parts (curl -F 'file=@clip.wav'), or "
                               "JSON {\"url\": ...} when the server runs with --allow-urls")
    parts = _Parts(folder, limits)
    parser = MultipartParser(options[b"boundary"], parts.callbacks())
    try:
        async for chunk in stream:
            parser.write(chunk)
        parser.finalize()
    except RequestError:
        await _drain(stream)
        raise
    except Exception as error:  # the multipart parser's own errors: a malformed body
        raise RequestError(400, f"malformed multipart body: {error}") from None
    finally:
        parts.close()
    if not parts.saved:
        raise RequestError(400, "no file in the request: send one or more file parts (curl -F 'file=@clip.wav')")
    return parts.saved


DRAIN_BYTES = 256 * MB
"""A refused upload is read and dropped up to this size before the answer: a client still
sending its body would otherwise see a reset connection instead of the 4xx that says why."""


async def _drain(stream):
    drained = 0
    async for chunk in stream:
        drained += len(chunk)
        if drained > DRAIN_BYTES:
            break


async def _fetch_json_url(request, folder, limits):
    from starlette.concurrency import run_in_threadpool

    if not limits.allow_urls:
        raise RequestError(403, "fetching URLs is off: start the server with --allow-urls, or upload the file")
    try:
        body = await request.json()
    except ValueError as error:
        raise RequestError(400, f"the JSON body cannot be read: {error}") from None
    if not isinstance(body, dict) or not isinstance(body.get("url"), str) or set(body) != {"url"}:
        raise RequestError(400, 'the JSON body must be {"url": "http(s)://..."} and nothing else')
    return await run_in_threadpool(fetch_url, body["url"], folder, limits)


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise RequestError(400, f"{req.full_url} redirects to {newurl}: only http(s) URLs are fetched")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_url(url, folder, limits):
    """Downloads ``url`` (http or https only) into ``folder``, at most the upload cap, within the timeout."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise RequestError(400, f"url {url!r}: only http:// and https:// URLs are fetched")
    target = folder / "url" / safe_name(urllib.parse.unquote(parsed.path), fallback="download")
    target.parent.mkdir()
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    try:
        with opener.open(url, timeout=limits.url_timeout) as response, open(target, "wb") as out:
            received = 0
            while chunk := response.read(MB):
                received += len(chunk)
                if received > limits.max_upload_bytes:
                    raise RequestError(413, f"{url} is larger than {limits.max_upload_bytes / MB:g} MB "
                                           "(--max-upload-mb)")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise RequestError(400, f"cannot fetch {url}: {getattr(error, 'reason', None) or error}") from None
    return target, url


def _unsafe(name):
    """Why an archive member's name would write outside the extraction folder, or None."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        return "has an absolute path"
    if ".." in posix.split("/"):
        return "has '..' in its path"
    return None


def _members(archive):
    """(name, size, kind) of every member: kind is 'file', 'dir', 'link' or 'other'."""
    if str(archive).lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                mode = info.external_attr >> 16
                kind = "dir" if info.is_dir() else "link" if stat.S_ISLNK(mode) else "file"
                yield info.filename, info.file_size, kind
        return
    with tarfile.open(archive) as t:
        for member in t:
            kind = ("file" if member.isfile() else "dir" if member.isdir() else
                    "link" if member.issym() or member.islnk() else "other")
            yield member.name, member.size, kind


def check_archive(archive, name, limits, counted):
    """Raises RequestError for an archive that must not be unpacked: a member with an absolute
    path, ``..`` or a link, or audio members over the file-count or unpacked-size caps
    (``counted`` = [files, bytes] so far in this request, updated). A broken archive passes:
    unpacking reports it in its row."""
    try:
        for member, size, kind in _members(archive):
            why = _unsafe(member) or {"link": "is a link", "other": "is not a regular file"}.get(kind)
            if why:
                raise RequestError(400, f"{name}: member {member!r} {why}; archive refused (members must be "
                                       "regular files and folders with relative paths)")
            if kind == "file" and is_audio_file(member):
                counted[0], counted[1] = counted[0] + 1, counted[1] + size
                if counted[0] > limits.max_files:
                    raise RequestError(413, f"{name}: more than {limits.max_files} audio files in one request "
                                           "(--max-files); split the archive")
                if counted[1] > limits.max_unpacked_bytes:
                    raise RequestError(413, f"{name}: the audio unpacks to more than "
                                           f"{limits.max_unpacked_bytes / MB:g} MB (--max-unpacked-mb); split it")
    except files.ARCHIVE_ERRORS:
        return


def expand(saved, folder, limits):
    """files.Inputs of the saved uploads, archives checked and unpacked below ``folder``; every
    path is shown as the client named it (``clips.zip/a/yes.wav`` for archive members)."""
    counted = [sum(1 for path, _ in saved if not files.is_archive(path)), 0]
    for path, name in saved:
        if files.is_archive(path):
            check_archive(path, name, limits, counted)
    found = files.expand_inputs([path for path, _ in saved], folder)
    shown = {str(path): name for path, name in saved}
    for archive, name in shown.copy().items():
        for key, member in found.names.items():
            if member.startswith(archive + "/"):
                shown[key] = name + member[len(archive):]
    for failure in found.failures:
        failure["path"] = next((name + failure["path"][len(path):] for path, name in shown.items()
                                if failure["path"].startswith(path)), failure["path"])
    found.names = shown
    return found
