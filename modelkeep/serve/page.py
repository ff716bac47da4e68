"""The web page of each served model: ``GET /`` lists the models, ``GET /models/{name}`` shows one.

A page shows what the model's file says about it -- its card (Markdown rendered safely), the parameter
table (``artifact.describe``'s rows, the ones ``modelkeep inspect`` prints), learning curves drawn from the
saved ``History`` as inline SVG, its lineage (the file's record; for a registry model also the registry's
parent chain) -- and a try-it form whose script (``static/page.js``) calls ``POST /v1/models/{name}/predict``
with ``fetch``. Nothing is fetched from anywhere but this server: the script and style sheet are package
data served under ``/static/``, and every HTML answer carries a Content-Security-Policy of ``'self'`` only,
so no inline script or style runs. Every text that comes from a model file is escaped here (the card's
Markdown with raw HTML off and only http(s) links, ``page_parts``); the script writes answers with ``textContent``
only.

The pages are open like the metadata endpoints: they show the model's own description and never a key.
Running the model from the page needs a key when the server has keys (a field on the page, kept in the
tab's ``sessionStorage`` and sent as ``Authorization: Bearer``). Never imports ``train`` or ``checkpoint``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from .models import ServedModel
from .page_parts import curve_charts, render_markdown

LOGGER = logging.getLogger("modelkeep.serve")
router = APIRouter(include_in_schema=False)
STATIC = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
#: Only this server's own script, style sheet and API; no inline code, no frames, no plugins, no form posts.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-store"}
MAX_ROW_INPUTS = 64  # wider rows are typed as comma-separated values only


@router.get("/")
async def index(request: Request) -> HTMLResponse:
    rows = "".join(
        f'<tr><td><a href="/models/{escape(m.name)}">{escape(m.name)}</a></td><td><code>{escape(m.version)}</code>'
        f"</td><td>{escape(str(m.model.manifest.task or ''))}</td><td>{_count(_total_parameters(m))}</td></tr>"
        for m in sorted(request.app.state.table.models(), key=lambda m: m.name))
    body = ("<h1>Models served here</h1><table><thead><tr><th>name</th><th>version</th><th>task</th>"
            f"<th>parameters</th></tr></thead><tbody>{rows}</tbody></table>"
            '<p class="note">The API: <code>/v2/models/NAME</code> (Open Inference Protocol), '
            '<code>/v1/models/NAME/predict</code>; its description is <a href="/openapi.json">/openapi.json</a>.</p>')
    return _html("modelkeep serve", body)


@router.get("/models/{name}")
async def model_page(request: Request, name: str) -> HTMLResponse:
    state = request.app.state
    served = state.table.get(name)
    cache = getattr(state, "pages", None)
    if cache is None:
        cache = state.pages = {}
    key = (served.name, served.version)
    if key not in cache:  # built once per served version: the file and the registry are read only here
        others = {m.model.content_hash: m.name for m in state.table.models() if m.model.content_hash}
        body = await asyncio.to_thread(_model_body, served, others, bool(state.settings.api_keys))
        for old in [k for k in cache if k[0] == served.name]:  # a version an alias moved away from
            del cache[old]
        cache[key] = body
    return _html(f"{served.name} · modelkeep serve", cache[key])


@router.get("/static/{file}")
async def static(file: str) -> Response:
    if file not in STATIC:
        return Response(b"not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    return Response(_asset(file), media_type=STATIC[file], headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


def _asset(file: str) -> bytes:
    return resources.files(__package__).joinpath("static", file).read_bytes()


def _html(title: str, body: str) -> HTMLResponse:
    page = ('<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/static/page.css">'
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            f'<script src="/static/page.js" defer></script></head><body><main>{body}</main></body></html>')
    return HTMLResponse(page, headers=SECURITY_HEADERS)


def _model_body(served: ServedModel, others: dict[str, str], keys: bool) -> str:
    """Every section of one model's page (the HTML inside ``<main>``)."""
    model, manifest = served.model, served.model.manifest
    facts = {"version": served.version, "source": _shown_source(served.source), "task": manifest.task,
             "classes": len(model.labels) if model.labels else None, "epochs trained": len(model.history) or None,
             "content hash": model.content_hash}
    facts.update({key: value for key, value in model.metrics.items() if isinstance(value, (int, float, str))})
    head = (f'<header><p class="crumbs"><a href="/">all models</a></p><h1>{escape(served.name)}</h1>'
            f"{_definitions(facts)}</header>")
    sections = [("Try it", _try_it(served, keys)), ("Model card", _card(served)),
                ("Parameters", _parameters(served)), ("Learning curves", _curves(model)),
                ("Lineage", _lineage(served, others))]
    return head + "".join(f'<section id="{escape(title.lower().replace(" ", "-"))}"><h2>{escape(title)}</h2>'
                          f"{content}</section>" for title, content in sections)


def _shown_source(source: str) -> str:
    """A file's name (not the server's folders) or a registry ref (not the registry's location)."""
    from ..registry.refs import is_registry_url, split_url

    return f"registry {split_url(source)[1]}" if is_registry_url(source) else Path(source).name


def _definitions(facts: dict[str, Any]) -> str:
    items = "".join(f"<dt>{escape(str(k))}</dt><dd>{_value(v)}</dd>" for k, v in facts.items() if v not in (None, ""))
    return f"<dl>{items}</dl>" if items else ""


def _value(value: Any) -> str:
    if isinstance(value, float):
        return escape(f"{value:.6g}")
    if isinstance(value, (dict, list)):
        return f"<code>{escape(json.dumps(value, ensure_ascii=False, default=str)[:2000])}</code>"
    return escape(str(value))


def _count(number: int | None) -> str:
    return "" if number is None else f"{number:,}"


# ---- the card ----------------------------------------------------------------------------------------------

def _card(served: ServedModel) -> str:
    card = served.model.card
    parts = []
    for field, value in card.items():
        title = escape(str(field).replace("_", " ").capitalize())
        shown = render_markdown(value) if isinstance(value, str) else f"<p>{_value(value)}</p>"
        parts.append(f'<div class="card-field"><h3>{title}</h3>{shown}</div>')
    registry_card = _registry_card(served)
    if registry_card:
        parts.append(f'<div class="card-field"><h3>Registry card</h3>{render_markdown(registry_card)}</div>')
    return "".join(parts) or '<p class="note">This file has no model card (<code>save(..., card={...})</code>).</p>'


def _registry_card(served: ServedModel) -> str | None:
    from ..registry.refs import is_registry_url

    if not is_registry_url(served.source):
        return None
    try:
        registry, name = _registry(served)
        return registry.card(f"{name}:{served.version}")
    except Exception as exc:  # noqa: BLE001 - the page shows the file's own card without it
        LOGGER.warning("no registry card for %s: %s: %s", served.name, type(exc).__name__, exc)
        return None


def _registry(served: ServedModel) -> tuple[Any, str]:
    from ..registry.api import open_registry
    from ..registry.base import parse_ref
    from ..registry.refs import split_url

    location, ref = split_url(served.source)
    return open_registry(location), parse_ref(ref)[0]


# ---- parameters --------------------------------------------------------------------------------------------

def _layer_rows(served: ServedModel) -> tuple[list[dict[str, Any]], int, int] | None:
    """``(rows, total, trainable)`` as ``modelkeep inspect`` shows them: ``describe`` of the file when it is still
    the file that was loaded, else (a file replaced since) the spec's own parameter report; None for neither."""
    from ..artifact import describe
    from ..errors import ModelkeepError

    model = served.model
    if model.path is not None:
        try:
            described = describe(model.path)
            if described["content_hash"] == model.content_hash:
                return described["layers"], described["total_parameters"], described["trainable_parameters"]
        except (OSError, ModelkeepError):
            pass
    if model.spec is not None:
        from ..spec.params import count_parameters

        report = count_parameters(model.spec)
        return [row.to_dict() for row in report.layers], report.total, report.trainable
    return None


def _total_parameters(served: ServedModel) -> int:
    return sum(p.numel() for p in served.model.module.parameters())


def _parameters(served: ServedModel) -> str:
    found = _layer_rows(served)
    if found is None:
        return ('<p class="note">The file this model was loaded from has changed on disk and its architecture is a '
                f"class, so its layers are not listed; it has {_count(_total_parameters(served))} parameters.</p>")
    rows, total, trainable = found
    body = "".join(
        f"<tr><td><code>{escape(str(row.get('name', '')))}</code></td><td>{escape(str(row.get('kind', '')))}</td>"
        f"<td>{escape(_shape(row.get('output_shape')))}</td><td class=\"number\">{_count(row.get('parameters'))}</td>"
        f"<td>{_trained(row)}</td></tr>" for row in rows)
    return ('<table class="layers"><thead><tr><th>layer</th><th>kind</th><th>output shape</th>'
            f'<th class="number">parameters</th><th>trains</th></tr></thead><tbody>{body}</tbody><tfoot><tr>'
            f'<td colspan="3">total ({_count(trainable)} trainable)</td><td class="number">{_count(total)}</td><td></td>'
            "</tr></tfoot></table>")


def _shape(shape: Any) -> str:
    return "" if shape is None else "(batch, " + ", ".join(str(d) for d in shape) + ")" if shape else "(batch,)"


def _trained(row: dict[str, Any]) -> str:
    """Whether a layer with parameters trains: the fine-tune record's word when there is one, else not frozen."""
    if not row.get("parameters"):
        return ""
    if row.get("trained") is not None:
        return "yes" if row["trained"] else "frozen"
    return "frozen" if row.get("frozen") else "yes"


# ---- curves and lineage ------------------------------------------------------------------------------------

def _curves(model: Any) -> str:
    history = model.history.to_dict()
    charts = curve_charts(history)
    return charts or '<p class="note">This file records no training history.</p>'


def _lineage(served: ServedModel, others: dict[str, str]) -> str:
    record = served.model.lineage
    parts = []
    parent = record.get("parent") if isinstance(record.get("parent"), dict) else None
    if parent:
        hash_ = str(parent.get("content_hash", ""))
        served_as = others.get(hash_)
        link = f' (served here as <a href="/models/{escape(served_as)}">{escape(served_as)}</a>)' if served_as else ""
        parts.append(f"<p>{escape(str(record.get('relation') or 'derived'))} from <code>{escape(hash_)}</code>{link}"
                     f"{' — ' + escape(Path(str(parent['source'])).name) if parent.get('source') else ''}</p>")
    rest = {k: v for k, v in record.items() if k not in ("parent", "relation")}
    parts.append(_definitions(rest))
    parts.append(_registry_chain(served))
    shown = "".join(parts)
    return shown or '<p class="note">This model was not derived from another one (its file records no lineage).</p>'


def _registry_chain(served: ServedModel, limit: int = 12) -> str:
    """The registry versions this one descends from, newest first (registry models only)."""
    from ..registry.refs import is_registry_url

    if not is_registry_url(served.source):
        return ""
    try:
        registry, name = _registry(served)
        version = registry.show(f"{name}:{served.version}")
        try:
            by_id = {v.id: v for v in registry.list()}
        except Exception:  # noqa: BLE001 - a registry that cannot list (OCI without a catalog): the parent id only
            by_id = {}
        chain = [version]
        while chain[-1].parent and len(chain) < limit:
            parent = by_id.get(chain[-1].parent)
            if parent is None or parent in chain:
                chain.append(None)
                break
            chain.append(parent)
    except Exception as exc:  # noqa: BLE001 - the registry is optional to the page
        LOGGER.warning("no registry lineage for %s: %s: %s", served.name, type(exc).__name__, exc)
        return '<p class="note">The registry could not be read for this version\'s parents.</p>'
    items = "".join(f"<li><code>{escape(v.ref)}</code>{_aliases(v)}</li>" if v is not None else
                    f"<li><code>{escape(str(chain[-2].parent)[:12])}</code> (not listed)</li>" for v in chain)
    return f'<h3>Registry versions, newest first</h3><ol class="chain">{items}</ol>'


def _aliases(version: Any) -> str:
    return f" @{escape(', @'.join(version.aliases))}" if version.aliases else ""


# ---- the try-it form ---------------------------------------------------------------------------------------

def _try_it(served: ServedModel, keys: bool) -> str:
    """The form ``page.js`` drives; what it needs to know (input kind and shape, classes) is in data attributes."""
    info = served.inputs[0]
    kind = _input_kind(served)
    attributes = {"endpoint": f"/v1/models/{served.name}/predict", "kind": kind, "shape": json.dumps(list(info.shape))}
    data = " ".join(f'data-{k}="{escape(v)}"' for k, v in attributes.items())
    shape = ", ".join("any" if d is None else str(d) for d in info.shape)
    fields = {"image": _image_fields, "row": _row_fields}.get(kind, _text_fields)(served)
    key_hint = "This server asks for an API key to run models." if keys else "This server needs no API key."
    return (f'<form id="try-it-form" {data} novalidate><p class="note">Input <code>{escape(info.name)}</code>: '
            f"{escape(info.dtype)}, shape (batch, {escape(shape)}).</p>{fields}"
            '<p class="key"><label for="api-key">API key</label> <input id="api-key" type="password" '
            f'autocomplete="off" spellcheck="false"> <span class="note">{key_hint} Kept in this tab only '
            "(sessionStorage) and sent as <code>Authorization: Bearer</code>.</span></p>"
            '<p><button type="submit" id="predict">Predict</button> <button type="button" id="predict-file">'
            'Predict the file</button> <input id="file" type="file" aria-label="file"></p>'
            '</form><div id="status" role="status" aria-live="polite"></div><div id="result"></div>')


def _input_kind(served: ServedModel) -> str:
    shape = served.inputs[0].shape
    if served.takes_text:
        return "text"
    if len(shape) == 3 and shape[0] in (1, 3) and None not in shape:
        return "image"
    if len(shape) == 1 and shape[0] is not None and served.inputs[0].dtype.startswith("float"):
        return "row"
    return "json"


def _image_fields(served: ServedModel) -> str:
    """A canvas of whole blocks of the model's pixels (each model pixel is k×k canvas pixels, about 280 wide), a
    preview of what the model sees, and for a colour model a colour to draw with."""
    channels, height, width = served.inputs[0].shape
    block = max(1, -(-280 // max(int(width), int(height))))
    colour = "grayscale" if channels == 1 else "colour (RGB)"
    picker = ('<label for="ink-colour">ink</label> <input id="ink-colour" type="color" value="#ffffff"> '
              if channels == 3 else "")
    return (f'<div class="drawing"><canvas id="canvas" width="{int(width) * block}" height="{int(height) * block}" '
            'aria-label="drawing area"></canvas>'
            f'<canvas id="preview" width="{int(width)}" height="{int(height)}" aria-label="what the model sees">'
            f'</canvas></div><p><button type="button" id="clear">Clear</button> {picker}'
            f'<label for="ink">input value of white</label> <input id="ink" type="number" step="any" '
            f'value="{escape(str(_white_value(served)))}"></p><p class="note">Draw (mouse or touch) or pick a '
            f"picture: it is resized to {int(width)}×{int(height)} {colour} pixels as the server resizes an upload "
            "(stretched to the model's size), black 0 to white as above (from the saved preprocessing), and sent as "
            "a row. <em>Predict the file</em> sends the file itself, decoded by the server with values 0–255.</p>")


def _row_fields(served: ServedModel) -> str:
    info = served.inputs[0]
    width = int(info.shape[0])
    inputs = "".join(f'<label>{escape(info.name)}[{i}] <input type="number" step="any" name="{escape(info.name)}[{i}]"'
                     f' class="cell" data-index="{i}"></label>' for i in range(width)) if width <= MAX_ROW_INPUTS else ""
    return (f'<div class="row-inputs">{inputs}</div><p><label for="csv">or {width} comma-separated values</label> '
            '<input id="csv" type="text" autocomplete="off" spellcheck="false"></p>'
            '<p class="note"><em>Predict the file</em> sends a CSV table, one row per line.</p>')


def _text_fields(served: ServedModel) -> str:
    if served.takes_text:
        return '<p><label for="text">Text</label><br><textarea id="text" rows="4"></textarea></p>'
    return ('<p><label for="text">One input as JSON (nested lists)</label><br>'
            '<textarea id="text" rows="4" spellcheck="false"></textarea></p>')


def _white_value(served: ServedModel) -> float:
    """The raw input value of a white pixel, from the saved preprocessing: what ``Rescale`` maps to 1, the maximum
    ``MinMaxScale`` saw, or two deviations above ``Standardize``'s mean; 255 (an 8-bit image) otherwise."""
    saved = served.model.manifest.preprocessing or {}
    kind = saved.get("type")
    try:
        if kind == "rescale" and float(saved["factor"]):
            value = (1.0 - float(saved.get("offset", 0.0))) / float(saved["factor"])
        elif kind == "min_max":
            value = max(float(v) for v in saved["max"])
        elif kind == "standardize":
            value = max(float(m) + 2 * float(s) for m, s in zip(saved["mean"], saved["std"]))
        else:
            value = 255.0
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        value = 255.0
    return float(f"{value:.3g}") if math.isfinite(value) and value > 0 else 255.0


__all__ = ["CSP", "SECURITY_HEADERS", "router"]
