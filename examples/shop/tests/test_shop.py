"""The shop's tests: only repocket's pytest plugin, no conftest.py.

Each test asks for ``repocket_connection`` (a clean database, or with
``--repocket-fake`` a fakeredis one) or carries the ``repocket_models`` marker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
import redis
from app import OutOfStock, aorders_of, orders_of, place_order, sign_up
from models import Customer, Order, Product

Counter = Callable[..., AbstractContextManager[Any]]


@pytest.fixture
def kettle(repocket_connection: redis.Redis) -> Product:
    """A product with 3 items in stock."""
    product: Product = Product.objects.create(sku="KET-1", title="Kettle", price_cents=2500, stock=3)
    return product


def test_an_order_takes_items_out_of_stock(kettle: Product) -> None:
    ann = sign_up("ann@example.com", "Ann")
    order = place_order(ann, kettle, 2)
    assert order.total_cents == 5000
    assert Product.objects.get(sku="KET-1").stock == 1
    assert Order.objects.get(id=order.id).customer.name == "Ann"


def test_an_order_for_too_many_items_is_refused(kettle: Product) -> None:
    ann = sign_up("ann@example.com", "Ann")
    with pytest.raises(OutOfStock, match="only 3 of KET-1 left, 4 asked for"):
        place_order(ann, kettle, 4)
    assert Product.objects.get(sku="KET-1").stock == 3
    assert not Order.objects.exists()


def test_listing_orders_is_three_round_trips(kettle: Product, repocket_assert_round_trips: Counter) -> None:
    ann = sign_up("ann@example.com", "Ann")
    for quantity in (1, 2):
        place_order(ann, kettle, quantity)
    with repocket_assert_round_trips(3):  # however many orders: the index, the orders, their pointers
        orders = orders_of(ann)
    assert [order.quantity for order in orders] == [2, 1]


def test_async_listing_costs_the_same(kettle: Product, repocket_assert_round_trips: Counter) -> None:
    ann = sign_up("ann@example.com", "Ann")
    place_order(ann, kettle, 1)
    with repocket_assert_round_trips(3):  # async requests are counted too
        orders = asyncio.run(aorders_of(ann))
    assert [order.total_cents for order in orders] == [2500]


@pytest.mark.repocket_models([Customer, Product, Order])
def test_on_a_shared_database_only_the_shop_keys_are_deleted(redis: redis.Redis) -> None:
    """Run with --redis-url on a database other data lives in: only the shop's keys go."""
    assert not Customer.objects.exists()  # the marker configured repocket and deleted the shop's keys
    sign_up("bob@example.com", "Bob")
    assert Customer.objects.count() == 1
