"""Parses OpenMetrics text from stdin with the Prometheus project's own Python parser
(prometheus_client.openmetrics.parser, strict: it rejects anything the format forbids) and
prints the samples as JSON lines: {"name", "labels", "value", "type"}."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({
            "family": family.name,
            "type": family.type,
            "name": sample.name,
            "labels": sample.labels,
            "value": sample.value,
        }))
