"""Adding a user: one bcrypt line in Radicale's htpasswd file.

A fresh machine has no ``htpasswd`` tool, and the shipped config
recommends bcrypt hashes, so ``fbgateway passwd FILE USER`` writes them
itself (Radicale's ``bcrypt`` extra is installed).  The file is replaced
atomically (a reader, such as the running server, sees the old or the new
file, never half of one), every other line stays as it was, and a new file
is readable by its owner only.
"""

import contextlib
import fcntl
import os
import tempfile
import time
from typing import Iterator, List


#: bcrypt looks at the first 72 bytes only; Radicale truncates longer
#: passwords at login, bcrypt 5 refuses to hash them.  Refusing them here
#: means no one believes the rest of a long password counts.
MAX_PASSWORD_BYTES = 72
#: Mode of a file this module creates (it holds password hashes).
NEW_FILE_MODE = 0o600
#: Largest htpasswd file read: thousands of users are far below this.
MAX_FILE_BYTES = 16 << 20
#: Longest wait for another ``passwd`` writing the same folder.
LOCK_SECONDS = 10.0


class PasswdError(ValueError):
    """A user name, password or file this command cannot use; the text
    says which and why."""


def check_user(user: str) -> None:
    """A login Radicale can read back from an htpasswd line."""
    if not user:
        raise PasswdError("the user name is empty")
    bad = [c for c in user if c in ":/\\" or c.isspace() or
           not c.isprintable()]
    if bad:
        raise PasswdError("user name %r may not contain %r" % (user, bad[0]))


def check_password(password: str) -> None:
    if not password:
        raise PasswdError("the password is empty")
    if "\n" in password or "\r" in password:
        raise PasswdError("the password may not contain a line break")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise PasswdError("the password is longer than %d bytes, of which "
                          "bcrypt would use only the first %d" % (
                              MAX_PASSWORD_BYTES, MAX_PASSWORD_BYTES))


def bcrypt_line(user: str, password: str) -> str:
    """``user:$2b$12$...`` without the line end."""
    check_user(user)
    check_password(password)
    import bcrypt   # here: the rest of fbgateway runs without it
    digest = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt())
    return "%s:%s" % (user, digest.decode("ascii"))


def _login(line: str) -> str:
    """The login of an htpasswd line as Radicale reads it ("" for blank
    and comment lines)."""
    text = line.rstrip("\r\n")
    if not text.strip() or text.lstrip().startswith("#"):
        return ""
    return text.split(":", 1)[0]


def set_password(path: str, user: str, password: str) -> bool:
    """Write ``user``'s bcrypt line into the htpasswd file at ``path``:
    in place of their line (later duplicates, which Radicale refuses, are
    dropped), or appended.  True when the user was already there."""
    new_line = bcrypt_line(user, password)
    # A link (/etc/fbgateway/users -> ...) stays a link: its target is
    # what gets replaced.
    path = os.path.realpath(path)
    with _folder_locked(os.path.dirname(path)):
        return _set_line(path, user, new_line)


@contextlib.contextmanager
def _folder_locked(folder: str) -> Iterator[None]:
    """Two ``passwd`` runs on one file would each write the file they
    read, and one user's new line would be lost: they take turns on a
    lock of the file's folder (no lock file left behind), waiting at
    most LOCK_SECONDS."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise PasswdError("cannot open %s: %s" % (folder, e.strerror)) \
            from None
    try:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PasswdError("%s is busy: another passwd is "
                                      "writing there" % folder) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(handle)    # releases the lock


def _set_line(path: str, user: str, new_line: str) -> bool:
    lines = _read_lines(path)
    ending = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    out: List[str] = []
    replaced = False
    for line in lines:
        if _login(line) == user:
            if not replaced:
                out.append(new_line + ending)
            replaced = True
            continue
        out.append(line)
    if not replaced:
        if out and not out[-1].endswith("\n"):
            out[-1] += ending
        out.append(new_line + ending)
    _replace(path, "".join(out))
    return replaced


def _read_lines(path: str) -> List[str]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as e:
        raise PasswdError("cannot read %s: %s" % (path, e.strerror)) \
            from None
    if len(data) > MAX_FILE_BYTES:
        raise PasswdError("%s is larger than %d bytes: not an htpasswd "
                          "file?" % (path, MAX_FILE_BYTES))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise PasswdError("%s is not UTF-8 text (Radicale's "
                          "htpasswd_encoding)" % path) from None
    return text.splitlines(keepends=True)


def _replace(path: str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it
    over ``path``: the old mode is kept, a new file gets NEW_FILE_MODE."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = NEW_FILE_MODE
    except OSError as e:
        raise PasswdError("cannot read %s: %s" % (path, e.strerror)) \
            from None
    try:
        # mkstemp creates the file 0600, so no hash is ever readable by
        # others, not even for a moment.
        handle, temporary = tempfile.mkstemp(
            prefix=".%s." % os.path.basename(path), dir=folder)
    except OSError as e:
        raise PasswdError("cannot write in %s: %s" % (folder, e.strerror)) \
            from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except OSError as e:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise PasswdError("cannot write %s: %s" % (path, e.strerror)) \
            from None
