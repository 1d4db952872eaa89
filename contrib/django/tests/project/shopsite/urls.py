from django.urls import path

from shop import views

urlpatterns = [
    path("products/<int:pk>", views.product_detail),
    path("products/<int:pk>/price", views.update_price),
]
