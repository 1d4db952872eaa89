"""pgfanout's cacheops preset needs each table's old rows in the WAL."""
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]
    operations = [
        migrations.RunSQL("ALTER TABLE shop_category REPLICA IDENTITY FULL",
                          "ALTER TABLE shop_category REPLICA IDENTITY DEFAULT"),
        migrations.RunSQL("ALTER TABLE shop_product REPLICA IDENTITY FULL",
                          "ALTER TABLE shop_product REPLICA IDENTITY DEFAULT"),
    ]
