"""The Elasticsearch/OpenSearch index template for ``pcapwire export``'s ECS JSON lines,
built from the field registry (:mod:`.fields`) so that it maps every field the documents
carry; shipped as ``templates/pcapwire-ecs.json`` (a test keeps the file equal to
:func:`template`).

Install it once (``PUT _index_template/pcapwire`` with the file as the body, in Kibana's
Dev Tools, OpenSearch Dashboards or curl); then Filebeat (a ``filestream`` input with
``parsers: [ndjson: {target: ""}]`` and ``output.elasticsearch.index: pcapwire-%{+yyyy.MM.dd}``)
or Logstash writes the lines to ``pcapwire-*`` indices with no mapping work.
"""

from __future__ import annotations

import json
from typing import Any

from pcapwire.cases.export import ECS_VERSION
from pcapwire.search.fields import FIELDS, OPAQUE_OBJECTS, STORED_FIELDS

INDEX_PATTERN = "pcapwire-*"
#: Fields whose ECS type is wider than the index keeps for searching.
ECS_TYPES = {"event.risk_score": "float"}
#: keyword values longer than this are kept in the document, not indexed (ECS default).
IGNORE_ABOVE = 1024


def _mapping(name: str, ftype: str) -> dict[str, Any]:
    if name in ECS_TYPES:
        return {"type": ECS_TYPES[name]}
    if ftype == "text":  # as ECS maps message-like fields: keyword + a text multi-field
        return {"type": "keyword", "ignore_above": IGNORE_ABOVE,
                "fields": {"text": {"type": "text"}}}
    if ftype == "keyword":
        return {"type": "keyword", "ignore_above": IGNORE_ABOVE}
    return {"type": ftype}


def properties() -> dict[str, Any]:
    root: dict[str, Any] = {}
    leaves = [(n, _mapping(n, t)) for n, t in {**FIELDS, **STORED_FIELDS}.items()]
    leaves += [(n, {"type": "object", "enabled": False}) for n in OPAQUE_OBJECTS]
    for name, mapping in leaves:
        node = root
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {"properties": {}})["properties"]
        node[leaf] = mapping
    return root


def template() -> dict[str, Any]:
    return {
        "index_patterns": [INDEX_PATTERN],
        "priority": 200,
        "_meta": {"description": "pcapwire metadata and verdicts as ECS (pcapwire export)",
                  "ecs_version": ECS_VERSION},
        "template": {
            "settings": {"index": {"mapping": {"total_fields": {"limit": 2000}}}},
            "mappings": {"dynamic": True, "date_detection": False,
                         "properties": properties()}}}


def template_json() -> str:
    return json.dumps(template(), indent=1, sort_keys=True) + "\n"
