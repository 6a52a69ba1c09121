"""The shop's models: customers, products and their orders (an Order points at both)."""

from __future__ import annotations

from repocket import ActiveRecord, attributes


class Customer(ActiveRecord):
    """Someone who buys: one account per email address."""

    __namespace__ = "shop"
    email = attributes.Unicode(unique=True)
    name = attributes.Unicode()


class Product(ActiveRecord):
    """Something for sale, with the number of items left."""

    __namespace__ = "shop"
    sku = attributes.Unicode(unique=True)
    title = attributes.Unicode()
    price_cents = attributes.Integer(index=True)
    stock = attributes.Integer()


class Order(ActiveRecord):
    """One purchase of ``quantity`` items of a product by a customer."""

    __namespace__ = "shop"
    customer = attributes.Pointer(Customer)
    product = attributes.Pointer(Product)
    quantity = attributes.Integer()
    total_cents = attributes.Integer(index=True)
