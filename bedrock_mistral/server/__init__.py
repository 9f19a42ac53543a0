"""A local server that speaks the Bedrock runtime protocol for Mistral models.

Point boto3, the AWS CLI or any Bedrock client at it (``endpoint_url=`` or
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME``) and it answers with any backend: the local
PyTorch model, or the deterministic echo backend for tests.

>>> from bedrock_mistral.server import serve_in_background   # doctest: +SKIP
>>> with serve_in_background(backend="echo") as url:
...     client = boto3.client("bedrock-runtime", endpoint_url=url, region_name="us-east-1")

The server is a plain ASGI app (``app.py``) run by uvicorn (h11): routing has to look at
the raw, still percent-encoded path, which framework routers decode first. Importing this
package imports neither uvicorn, boto3 nor torch; uvicorn is imported when a server starts.
"""

from __future__ import annotations

from bedrock_mistral.server.app import BedrockApp, create_app
from bedrock_mistral.server.config import ServerConfig
from bedrock_mistral.server.faults import FAULT_KINDS, FaultKind, FaultPlan
from bedrock_mistral.server.runner import LocalServer, run_server, serve_in_background
from bedrock_mistral.server.stats import RequestRecord, ServerStats

__all__ = [
    "FAULT_KINDS",
    "BedrockApp",
    "FaultKind",
    "FaultPlan",
    "LocalServer",
    "RequestRecord",
    "ServerConfig",
    "ServerStats",
    "create_app",
    "run_server",
    "serve_in_background",
]
