"""opencbs: an open-source backup server and agent that speaks the AhsayCBS JSON API."""

__version__ = "0.1.0"
