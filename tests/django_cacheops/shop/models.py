"""One model with a field of each type pgfanout's cacheops encoder converts."""
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=50)


class Product(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=100, default="", blank=True)
    active = models.BooleanField(default=True)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=0)
    ratio = models.DecimalField(max_digits=20, decimal_places=10, null=True)
    rating = models.FloatField(default=0)
    released = models.DateField(null=True)
    updated = models.DateTimeField(null=True)
    opens = models.TimeField(null=True)
    ttl = models.DurationField(null=True)
    uid = models.UUIDField(null=True)
    stock = models.BigIntegerField(default=0)
    qty = models.SmallIntegerField(default=0)
    ip = models.GenericIPAddressField(null=True)
    category = models.ForeignKey(Category, on_delete=models.CASCADE, null=True)
    note = models.TextField(default="", blank=True)
    label = models.CharField(max_length=100, null=True)
