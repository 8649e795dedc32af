"""The pure core: the rotation state machine, its value objects and its ports.

Nothing here imports httpx, hvac, SQLAlchemy or APScheduler; it decides, adapters act.
"""
