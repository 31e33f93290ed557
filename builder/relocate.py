"""Move a prefix: rewrite the old prefix path to the new one in the files that record it.

Self-contained (standard library only): its source is embedded into the
``bin/conda-unpack`` script of packed environments, so an unpacked environment
relocates itself with its own Python. Text files get a plain replacement;
binary files get conda's NUL-padded replacement (the new path must not be
longer than the old one there).

>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> _ = (root / "a.txt").write_text("prefix=/old/env/lib")
>>> relocate(str(root), "/old/env", "/new", [("a.txt", "text")])
1
>>> (root / "a.txt").read_text()
'prefix=/new/lib'
>>> binary_replace(b"x/old/env/lib\\0tail", b"/old/env", b"/new")
b'x/new/lib\\x00\\x00\\x00\\x00\\x00tail'
"""

import os
import re


def binary_replace(data: bytes, old: bytes, new: bytes) -> bytes:
    """conda's binary relocation: each C string containing ``old`` keeps its length, padded with NULs."""
    if len(new) > len(old):
        raise ValueError(f"new prefix {new!r} is longer than the packed prefix {old!r}; binary files cannot grow")

    def padded(match: "re.Match[bytes]") -> bytes:
        occurrences = match.group().count(old)
        return match.group().replace(old, new) + b"\0" * (occurrences * (len(old) - len(new)))

    return re.sub(re.escape(old) + b"[^\0]*?(?=\0)", padded, data)


def relocate(prefix: str, old: str, new: str, entries: "list[tuple[str, str]]") -> int:
    """Rewrite ``old`` to ``new`` in each ``(relative path, 'text' | 'binary')`` entry; returns files changed."""
    changed = 0
    old_b, new_b = old.encode(), new.encode()
    for rel, mode in entries:
        path = os.path.join(prefix, rel)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        if old_b not in data:
            continue
        data = binary_replace(data, old_b, new_b) if mode == "binary" else data.replace(old_b, new_b)
        st = os.stat(path)
        tmp = path + ".envyard-relocate"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, st.st_mode & 0o7777)
        os.replace(tmp, path)
        changed += 1
    return changed
