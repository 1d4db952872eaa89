import json
from decimal import Decimal

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pgfanout_django import commit_lsn, wait_for_invalidation

from .models import Product
from .services import product_info


def product_detail(request, pk):
    return JsonResponse(product_info(pk))


@csrf_exempt
@require_POST
def update_price(request, pk):
    """Writes, then waits until pgfanout has invalidated the write (read-your-writes), so the
    response and the next read of the cache show the new price."""
    price = Decimal(json.loads(request.body)["price"])
    Product.objects.filter(pk=pk).update(price=price)     # autocommit: committed here
    lsn = commit_lsn()
    invalidated = wait_for_invalidation(lsn, timeout=float(request.GET.get("timeout", "5")))
    return JsonResponse({"lsn": lsn, "invalidated": invalidated,
                         "product": product_info(pk) if invalidated else None})
