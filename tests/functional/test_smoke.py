def test_admin_can_list_flavors(cloud):
    r = cloud.client.get("/v1/flavors", headers=cloud.admin)
    assert r.status_code == 200, r.text
    assert [f["name"] for f in r.json()["flavors"]] == [
        "m1.tiny",
        "m1.small",
        "m1.medium",
        "m1.large",
        "m1.xlarge",
    ]
