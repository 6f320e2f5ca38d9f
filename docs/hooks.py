"""MkDocs hook: the committed figures and reports under `experiments/results/` are part of the site.

The pages link to them as GitHub shows the repository (`../experiments/results/...` from `docs/`); the
hook adds those files to the site and points the links at them, so the same Markdown reads right on
GitHub and on the site, and a dead link still fails the strict build."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
SHARED = ("experiments/results",)


def on_files(files, config):
    for folder in SHARED:
        for path in sorted((ROOT / folder).glob("*/*")):  # the figures and data beside each report
            if path.is_file() and path.suffix in (".png", ".svg", ".json", ".csv"):
                files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"],
                                  config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    return markdown.replace("](../experiments/results/", "](experiments/results/")
