"""Drives the CRM simulator with simple-salesforce, a widely used third-party client, unchanged:
query and queryAll, create / get / update / upsert / delete, describe, limits, a collections call.
Prints one JSON object with what it saw. Environment: CRM_URL (the simulator's instance URL),
CRM_TOKEN (an access token from its OAuth endpoint)."""

import json
import os

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce


class PlainHttp(HTTPAdapter):
    """simple-salesforce builds https:// URLs from the instance; the simulator on loopback
    speaks plain HTTP. Rewrites the scheme, and nothing else."""

    def send(self, request, **kwargs):
        request.url = "http://" + request.url[len("https://"):]
        return super().send(request, **kwargs)


url = os.environ["CRM_URL"]
host = url.split("://", 1)[1]
session = requests.Session()
session.mount("https://" + host, PlainHttp())
sf = Salesforce(instance_url=url, session_id=os.environ["CRM_TOKEN"], session=session, version="59.0")

out = {}
opps = sf.query_all("SELECT Id, Name, Amount FROM Opportunity ORDER BY Name")
out["query_total"] = opps["totalSize"]
out["query_ids"] = [r["Id"] for r in opps["records"]]
created = sf.Opportunity.create(
    {"Name": "From simple-salesforce", "StageName": "Prospecting", "CloseDate": "2027-02-26", "Amount": 1234}
)
out["created"] = created["success"]
new_id = created["id"]
out["get_name"] = sf.Opportunity.get(new_id)["Name"]
out["update_status"] = sf.Opportunity.update(new_id, {"Amount": 4321})
upserted = sf.Opportunity.upsert("External_Id__c/ext-3p-1", {
    "Name": "Upserted by simple-salesforce", "StageName": "Prospecting", "CloseDate": "2027-03-31",
})
out["upsert_created"] = upserted
out["upsert_again"] = sf.Opportunity.upsert("External_Id__c/ext-3p-1", {"Amount": 99})
out["by_external_id"] = sf.Opportunity.get_by_custom_id("External_Id__c", "ext-3p-1")["Amount"]
out["delete_status"] = sf.Opportunity.delete(new_id)
deleted = sf.query_all(f"SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{new_id}'", include_deleted=True)
out["query_all_deleted"] = [r["IsDeleted"] for r in deleted["records"]]
out["describe_fields"] = sorted(f["name"] for f in sf.Opportunity.describe()["fields"])
out["global_objects"] = sorted(o["name"] for o in sf.describe()["sobjects"])
limits = sf.limits()
out["daily_api"] = limits["DailyApiRequests"]
collection = sf.restful(
    "composite/sobjects",
    method="PATCH",
    data=json.dumps({
        "allOrNone": False,
        "records": [{"attributes": {"type": "Opportunity"}, "id": out["query_ids"][0], "Amount": 777}],
    }),
)
out["collection"] = [r["success"] for r in collection]
print(json.dumps(out))
