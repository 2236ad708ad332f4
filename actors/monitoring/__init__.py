"""The monitoring plane: data quality, drift, live accuracy per version, and the exported metrics.

Owns: the prediction log joined with delayed labels, the ``StreamMonitor`` (drift against the
live version's reference quantiles), the sampled time series behind the status page (with the
coordinator's serving/training skew), and the Prometheus metrics — ``serve_metrics()`` makes those
the Serve replicas count; its ``MonitorActor`` shell asks the trainer for a refit on a drift alarm.

May import: the core package ``streamfit`` only (other planes are reached as named actors).

Exposes the names in ``__all__`` (imported lazily).
"""

from streamfit.exports import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "MetricsExport": "metrics_export",
    "Monitor": "core",
    "MonitorActor": "monitor",
    "MonitorState": "monitor_state",
    "PredictionLog": "prediction_log",
    "RefitAlarm": "alarms",
    "Sample": "sampler",
    "Sampler": "sampler",
    "StreamMonitor": "stream_monitor",
    "prometheus_names": "metrics_export",
    "serve_metrics": "metrics_export",
})
