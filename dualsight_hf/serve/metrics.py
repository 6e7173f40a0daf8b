"""What the service counts, in Prometheus' text format (`GET /metrics`), with `prometheus_client`."""

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    """
    The service's counters and histograms, in a registry of their own (several apps in one process, as in the
    tests, do not share counts).

    Attributes:
        requests (`Counter`): `dualsight_requests_total{endpoint, status}`.
        errors (`Counter`): `dualsight_errors_total{cause}`: refused images and requests by cause
            (`unreadable_image`, `too_large`, `unsupported_media_type`, `bad_parameter`, `unauthorized`,
            `database_unavailable`, ...).
        images (`Counter`): `dualsight_images_total{label}`: scored images by authenticity label.
        batch_size (`Histogram`): `dualsight_batch_size`: images per forward pass.
        latency (`Histogram`): `dualsight_request_latency_seconds{endpoint}`.

    Example:

    ```python
    >>> from dualsight_hf.serve.metrics import ServiceMetrics
    >>> metrics = ServiceMetrics()
    >>> metrics.batch_size.observe(4)
    >>> "dualsight_batch_size_sum 4.0" in metrics.render().decode()
    True
    ```
    """

    def __init__(self):
        disable_created_metrics()  # no `*_created` timestamp series next to each counter (process-wide setting)
        self.registry = CollectorRegistry()
        self.requests = Counter("dualsight_requests", "HTTP requests by endpoint and status",
                                ("endpoint", "status"), registry=self.registry)
        self.errors = Counter("dualsight_errors", "Refused images and requests by cause", ("cause",),
                              registry=self.registry)
        self.images = Counter("dualsight_images", "Scored images by authenticity label", ("label",),
                              registry=self.registry)
        self.batch_size = Histogram("dualsight_batch_size", "Images per forward pass", buckets=BATCH_SIZE_BUCKETS,
                                    registry=self.registry)
        self.latency = Histogram("dualsight_request_latency_seconds", "Request latency by endpoint", ("endpoint",),
                                 buckets=LATENCY_BUCKETS, registry=self.registry)

    def render(self) -> bytes:
        """The metrics in Prometheus' text exposition format."""
        return generate_latest(self.registry)
