"""HTML -> PDF/A-3b with WeasyPrint, with a URL fetcher that can only read the report's own assets.

Registry text is untrusted: it is autoescaped in the HTML, and even if markup slipped through, the fetcher
refuses every URL that is not a ``data:`` URI or a ``file:`` path inside one of the allowed folders (the
report's asset folder and the template folders). No http, https, ftp, and no file outside those folders.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import unquote, urlsplit

log = logging.getLogger("governance.report")

PDF_VARIANT = "pdf/a-3b"


def _fetcher_class() -> type:
    from weasyprint.urls import URLFetcher

    class LocalAssetFetcher(URLFetcher):
        """Serve ``data:`` URIs and files under ``roots``; refuse (and record) everything else."""

        def __init__(self, roots: Iterable[Path]) -> None:
            super().__init__(allowed_protocols={"data", "file"}, allow_redirects=False, timeout=1)
            self.roots = [Path(r).resolve() for r in roots]
            self.refused: list[str] = []

        def _allowed_file(self, url: str) -> bool:
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                return False
            path = Path(unquote(parts.path)).resolve()
            return any(path == r or r in path.parents for r in self.roots) and path.is_file()

        def fetch(self, url: str, headers: Any = None) -> Any:
            scheme = url.split(":", 1)[0].lower() if ":" in url else ""
            if scheme == "data" or (scheme == "file" and self._allowed_file(url)):
                return super().fetch(url, headers)
            self.refused.append(url)
            log.warning("report: refused to fetch %s (only local report assets may be read)", url[:200])
            raise ValueError(f"governance report refuses to fetch {url[:200]!r}: only local report assets")

    return LocalAssetFetcher


def make_fetcher(roots: Iterable[Path]) -> Any:
    """A WeasyPrint URL fetcher restricted to ``data:`` URIs and files under ``roots``."""
    return _fetcher_class()(roots)


def render_pdf(html: str, target: Path, *, base_dir: Path, asset_roots: Iterable[Path],
               attachments: Iterable[tuple[str, bytes, str, str]] = (), created: datetime | None = None,
               variant: str | None = PDF_VARIANT) -> dict[str, Any]:
    """Write ``html`` to ``target`` as PDF/A-3b with ``attachments`` (name, bytes, description,
    AFRelationship). Returns ``{pages, variant, refused_urls}``."""
    import weasyprint

    fetcher = make_fetcher([base_dir, *asset_roots])
    doc = weasyprint.HTML(string=html, base_url=str(base_dir.resolve()) + "/", url_fetcher=fetcher)
    rendered = doc.render()
    atts = [
        weasyprint.Attachment(string=data, name=name, description=desc, relationship=rel,
                              created=created, modified=created)
        for name, data, desc, rel in attachments
    ]
    options: dict[str, Any] = {"attachments": atts}
    if variant:
        options["pdf_variant"] = variant
    rendered.write_pdf(target, **options)
    return {"pages": len(rendered.pages), "variant": variant, "refused_urls": list(fetcher.refused)}
