"""The HTTP face of pcapwire: REST API (``/api/v1``), its OpenAPI document and the
responder's dashboard (``/ui``), all served by one aiohttp application.

``create_app(ApiConfig(...))`` builds it; ``pcapwire serve`` runs it.
"""

from pcapwire.api.app import create_app
from pcapwire.api.config import ApiConfig

__all__ = ["ApiConfig", "create_app"]
