#!/usr/bin/env python3
"""Rewrites a generated replay file so that contact keys look like real ones.

`hooklake gen` names contacts in sequence (`previewId` `contact_50000`, email
`lead50000@example.com`), so a key-ordered table receives a flush's new contacts side by side.
iClosed's preview ids are `contact_` and 12 random URL-safe characters, and emails are names:
a real flush's keys land anywhere. This maps each generated preview id and each email's local
part to a random-looking one, the same for every occurrence, and leaves everything else as it is.

Usage: scripts/random-keys.py IN.ndjson OUT.ndjson
How the lead scoring benchmark's second input is made (docs/benchmarks.md, Lead scoring).
"""
import base64
import hashlib
import re
import sys


def digest(text, chars):
    raw = hashlib.blake2b(text.encode(), digest_size=12).digest()
    return base64.urlsafe_b64encode(raw).decode()[:chars]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    preview = re.compile(r"contact_(\d+)")
    email = re.compile(r"lead(\d+)@")
    previews, locals_ = {}, {}

    def new_preview(m):
        key = m.group(1)
        if key not in previews:
            previews[key] = "contact_" + digest("p" + key, 12)
        return previews[key]

    def new_local(m):
        key = m.group(1)
        if key not in locals_:
            # Lower case, no '-' or '_': the email stays one hooklake and DuckDB read alike.
            local = digest("e" + key, 10).lower().replace("-", "x").replace("_", "y")
            locals_[key] = local + "@"
        return locals_[key]

    with open(sys.argv[1]) as src, open(sys.argv[2], "w") as out:
        for line in src:
            out.write(email.sub(new_local, preview.sub(new_preview, line)))


if __name__ == "__main__":
    main()
