"""The shop's reads, cached the plain Django way: get_or_set and a cached(...) function.
Nothing here knows about leases or pgfanout; the backend in settings does."""
from django.core.cache import cache

from pgfanout_django import cached

from .models import Product


def product_key(pk):
    return "product:%d" % pk


def product_info(pk):
    """The product as a dict, from the cache or the database."""
    return cache.get_or_set(product_key(pk), lambda: load_product(pk))


def load_product(pk):
    p = Product.objects.get(pk=pk)
    return {"id": p.pk, "name": p.name, "price": str(p.price)}


@cached("product:{pk}:name", timeout=600)
def product_name(pk):
    return Product.objects.values_list("name", flat=True).get(pk=pk)
