"""`mivl serve`: a bundle behind an OpenAI-compatible HTTP API (Starlette + uvicorn)."""
