"""Reads a large org on the CRM simulator with simple-salesforce, a widely used third-party
client, unchanged: REST `query_all` following `nextRecordsUrl` past 2,000 rows, a Bulk API 2.0
query job paged by `maxRecords` and `Sforce-Locator`, and a queryAll job. Prints one JSON
object with what it read. Environment: CRM_URL (the simulator's
instance URL), CRM_TOKEN (an access token from its OAuth endpoint)."""

import csv
import io
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


def rows(pages):
    out = []
    count = 0
    for page in pages:
        count += 1
        out.extend(csv.DictReader(io.StringIO(page)))
    return count, out


out = {}
soql = "SELECT Id, Name, Amount, CloseDate, IsDeleted FROM Opportunity"
rest = sf.query_all(soql)
out["rest_total"] = rest["totalSize"]
out["rest_ids"] = [r["Id"] for r in rest["records"]]
out["pages"], out["rows"] = rows(sf.bulk2.Opportunity.query(soql, max_records=1000, wait=0.1))
out["all_pages"], out["all_rows"] = rows(sf.bulk2.Opportunity.query_all(soql, max_records=1000, wait=0.1))
print(json.dumps(out))
