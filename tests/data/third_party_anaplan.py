"""Reads the Anaplan simulator's model structure with anaplan-sdk, a widely used third-party
Python client for Anaplan, unchanged but for one transport that sends its calls for Anaplan's
public hosts to the loopback simulator: modules, every line item with its format metadata
(parsed by its own models), lists and a list's items. Prints one JSON object with what it
read. Environment: ANAPLAN_URL (the simulator's base URL), ANAPLAN_TOKEN (a token from its
auth endpoint), ANAPLAN_WORKSPACE, ANAPLAN_MODEL."""

import json
import os

import httpx2
from anaplan_sdk import Client

target = httpx2.URL(os.environ["ANAPLAN_URL"])


class ToSimulator(httpx2.HTTPTransport):
    """Rewrites the scheme, host and port of each request, and nothing else."""

    def handle_request(self, request):
        request.url = request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        return super().handle_request(request)


client = Client(
    workspace_id=os.environ["ANAPLAN_WORKSPACE"],
    model_id=os.environ["ANAPLAN_MODEL"],
    token=os.environ["ANAPLAN_TOKEN"],
    transport=ToSimulator(),
)
out = {"modules": [m.name for m in client.tr.get_modules()]}
out["line_items"] = [
    {
        "name": li.name,
        "module": li.module_name,
        "format": li.format,
        "metadata": li.format_metadata.model_dump(mode="json", by_alias=True),
    }
    for li in client.tr.get_line_items()
]
lists = client.tr.get_lists()
out["lists"] = [l.name for l in lists]
stages = next(l for l in lists if l.name == "Stages")
out["stages"] = sorted(i.name for i in client.tr.get_list_items(stages.id))
print(json.dumps(out))
