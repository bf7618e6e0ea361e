import pytest


@pytest.mark.django_db
def test_create_app_returns_202_with_operation(owner_client, regions):
    resp = owner_client.post("/api/v1/apps", {"name": "demo", "regions": ["cn-beijing"]}, format="json")
    assert resp.status_code == 202, resp.content
    assert resp["Location"].endswith(f"/api/v1/operations/{resp.json()['id']}")
    assert resp.json()["kind"] == "provision"
    listing = owner_client.get("/api/v1/apps").json()
    assert listing["count"] == 1
    assert listing["results"][0]["regions"] == ["cn-beijing"]
