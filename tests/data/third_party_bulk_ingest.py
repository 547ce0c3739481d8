"""Writes to the CRM simulator through Bulk API 2.0 ingest with simple-salesforce, a widely used
third-party client, unchanged: insert, upsert by an external id (a key two rows share fails
both), update, delete and hard_delete, each job's results read back as simple-salesforce reads
them. Prints one JSON object with what it saw. Environment: CRM_URL, CRM_TOKEN."""

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
bulk = sf.bulk2.Opportunity


def results(job):
    """The job's counts, and its successful and failed rows as simple-salesforce reads them."""
    job_id = job[0]["job_id"]
    return {
        "processed": job[0]["numberRecordsProcessed"],
        "failed": job[0]["numberRecordsFailed"],
        "ok": list(csv.DictReader(io.StringIO(bulk.get_successful_records(job_id)))),
        "bad": list(csv.DictReader(io.StringIO(bulk.get_failed_records(job_id)))),
    }


def deal(key, name, amount):
    return {"External_Id__c": key, "Name": name, "StageName": "Prospecting",
            "CloseDate": "2027-02-01", "Amount": amount}


out = {}
out["insert"] = results(bulk.insert(records=[deal("BULK-1", "Bulk one", "100"),
                                             deal("BULK-2", "Bulk two", "200"),
                                             deal("BULK-3", "Bulk three", "300")], wait=0.1))
out["upsert"] = results(bulk.upsert(records=[deal("BULK-1", "Bulk one, upserted", "110"),
                                             deal("BULK-4", "Bulk four", "400"),
                                             deal("BULK-5", "Bulk five", "500"),
                                             deal("BULK-5", "Bulk five again", "501")],
                                    external_id_field="External_Id__c", wait=0.1))
ids = {row["External_Id__c"]: row["sf__Id"] for row in out["insert"]["ok"]}
out["ids"] = ids
out["update"] = results(bulk.update(records=[{"Id": ids["BULK-2"], "Amount": "220"}], wait=0.1))
out["delete"] = results(bulk.delete(records=[{"Id": ids["BULK-2"]}], wait=0.1))
out["hard_delete"] = results(bulk.hard_delete(records=[{"Id": ids["BULK-3"]}], wait=0.1))
print(json.dumps(out))
