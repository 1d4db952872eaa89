-- docker-compose.yml's demo database: a table, its publication, and a least-privilege role
-- (REPLICATION plus SELECT on the published tables only).
CREATE TABLE products (id int PRIMARY KEY, slug text UNIQUE, name text, price numeric);
ALTER TABLE products REPLICA IDENTITY FULL;
CREATE PUBLICATION pgfanout FOR TABLE products;
CREATE ROLE cdc LOGIN REPLICATION PASSWORD 'cdc';
GRANT SELECT ON products TO cdc;
GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO cdc;
