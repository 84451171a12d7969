"""The interactive data map, ``data/cartography/data_map.html``: one self-contained, offline HTML
page that shows every example of the map, lets a reviewer select and decide examples, and
downloads the decisions as ``data/corrections.csv`` (``docs/data-map-page.md``).

* :mod:`.builder` -- :func:`build_page`: points, inputs and prior decisions to the page's HTML
  (the renderer choice, the data format and the security model are in its docstring); the
  page's own code is package data next to it: ``template.html``, ``page.js``, ``page.css``.
* :mod:`.inputs` -- what the cartography stage reads for it (:func:`write_data_map_html`).

The corrections download uses the spreadsheet guard of the corrections file:
:func:`read_page_csv_cell` (:func:`datamap.data.corrections.unguard_cell`) undoes it.
"""

from __future__ import annotations

from datamap.cartography.page.builder import (
    ACTIONS,
    CORRECTIONS_CSV,
    SELECTION_CSV,
    TEXT_CHARS,
    THUMBNAIL_PX,
    Features,
    Images,
    Texts,
    build_page,
    correctness_colours,
    csv_cell,
    page_meta,
    to_uint8,
)
from datamap.cartography.page.inputs import (
    PAGE_NAME,
    PageInfo,
    decisions_frame,
    html_options,
    input_preview,
    most_predicted,
    write_data_map_html,
)
from datamap.data.corrections import unguard_cell as read_page_csv_cell

__all__ = [
    "ACTIONS", "CORRECTIONS_CSV", "PAGE_NAME", "SELECTION_CSV", "TEXT_CHARS", "THUMBNAIL_PX",
    "Features", "Images", "PageInfo", "Texts", "build_page", "correctness_colours", "csv_cell",
    "decisions_frame", "html_options", "input_preview", "most_predicted", "page_meta",
    "read_page_csv_cell", "to_uint8", "write_data_map_html",
]
