"""
`dualsight serve`: an HTTP service (FastAPI on uvicorn) that scores images with micro-batching and records every
decision in a prediction history (SQLite or PostgreSQL). Needs the `serve` extra: `pip install dualsight-hf[serve]`;
the core package does not import it.
"""

from .app import ServiceError, ServiceSettings, create_app
from .history import History, HistoryUnavailable

__all__ = ["History", "HistoryUnavailable", "ServiceError", "ServiceSettings", "create_app"]
