"""streamfit: keep XGBoost models fresh on streaming data with Ray; roll them out blue-green with Ray Serve."""

__version__ = "0.1.0"
