"""What the shop does with its models: sign customers up, take orders, list them."""

from __future__ import annotations

from models import Customer, Order, Product


class OutOfStock(Exception):
    """An order asked for more items than are left."""


def sign_up(email: str, name: str) -> Customer:
    """A new customer (``UniqueConstraintError`` if the email is taken)."""
    customer: Customer = Customer.objects.create(email=email, name=name)
    return customer


def place_order(customer: Customer, product: Product, quantity: int) -> Order:
    """Take ``quantity`` items out of stock and record the order.

    The stock is decremented inside Redis, so two concurrent orders never both
    take the last item: the one that would leave it negative is put back and refused.

    Raises:
        OutOfStock: fewer than ``quantity`` items are left.
    """
    left: int = product.decr("stock", quantity)
    if left < 0:
        product.incr("stock", quantity)
        raise OutOfStock(f"only {left + quantity} of {product.sku} left, {quantity} asked for")
    order: Order = Order.objects.create(customer=customer, product=product, quantity=quantity,
                                        total_cents=quantity * product.price_cents)
    return order


def orders_of(customer: Customer) -> list[Order]:
    """The customer's orders, most expensive first."""
    return list(Order.objects.filter(customer=customer).order_by("-total_cents"))


async def aorders_of(customer: Customer) -> list[Order]:
    """The async twin of :func:`orders_of`, for async web handlers."""
    return [order async for order in Order.objects.filter(customer=customer).order_by("-total_cents")]
