"""Drives bcproxy with BigCommerce's official Python client, exactly as an app would.

Usage: official_client.py basic|oauth
Environment: BCPROXY_HOST (host:port of the proxy's HTTPS listener), BCPROXY_CLIENT and
BCPROXY_TOKEN (the app's [[clients]] credential), REQUESTS_CA_BUNDLE (the proxy's CA);
for oauth also BC_API_ENDPOINT (= BCPROXY_HOST) and BCPROXY_STORE_HASH.
Prints "ok" and exits 0 when every step behaved; raises otherwise.
"""
import os
import sys

import bigcommerce
from bigcommerce.exception import ClientRequestException


def main(mode):
    token = os.environ["BCPROXY_TOKEN"]
    if mode == "basic":
        api = bigcommerce.api.BigcommerceApi(
            host=os.environ["BCPROXY_HOST"], basic_auth=(os.environ["BCPROXY_CLIENT"], token)
        )
    else:
        api = bigcommerce.api.BigcommerceApi(
            client_id="app-client-id", store_hash=os.environ["BCPROXY_STORE_HASH"], access_token=token
        )

    products = api.Products.all(limit=5)
    assert len(products) == 5, products
    third = api.Products.get(products[2].id)
    assert third.name == products[2].name, third
    assert api.Products.count() >= 60

    created = api.Products.create(
        name="Python ☕ mug " + mode, type="physical", price="9.50", weight="1",
        categories=[1], availability="available",
    )
    assert created.id, created
    assert api.Products.get(created.id).name == "Python ☕ mug " + mode

    created.update(name="Python ☕ mug " + mode + " v2")
    assert api.Products.get(created.id).name == "Python ☕ mug " + mode + " v2"

    created.delete()
    try:
        api.Products.get(created.id)
    except ClientRequestException as e:
        assert e.response.status_code == 404, e
    else:
        raise AssertionError("the deleted product is still there")
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
