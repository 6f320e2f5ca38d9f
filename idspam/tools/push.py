"""Upload a run's adapter folder to the Hugging Face hub (PEFT files, idspam's files, the model card).

    idspam-push outputs/runs/.../adapter my-user/idspam-sst2          # python -m idspam push ... alike
    idspam-push <run>/adapter my-org/name --private --revision main

The token is huggingface_hub's (`hf auth login`, or `HF_TOKEN`). Without a network, or with
HF_HUB_OFFLINE=1, it stops in seconds with one line. In Python: `idspam.push_adapter(folder, repo_id)`.
After the upload, `idspam.load_adapter` needs the folder on disk (`huggingface_hub.snapshot_download`);
PEFT's auto classes read the repository directly (see its model card).
"""

from __future__ import annotations

import sys

from .cli import ArgumentParser, fail


def parser() -> ArgumentParser:
    p = ArgumentParser(prog="idspam-push", description=__doc__)
    p.add_argument("adapter", help="a run's adapter folder (<run>/adapter)")
    p.add_argument("repo", help="the hub repository id, <user or org>/<name> (created if absent)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="the branch to push to (default: the main branch)")
    p.add_argument("--message", default=None, help="the commit message")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from ..errors import UserError
    from ..publish import push_adapter

    try:
        url = push_adapter(args.adapter, args.repo, private=args.private or None, revision=args.revision,
                           commit_message=args.message)
    except UserError as e:
        fail(str(e))
    print(f"pushed {args.adapter} to {args.repo}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
