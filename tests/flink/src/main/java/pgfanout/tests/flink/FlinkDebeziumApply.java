package pgfanout.tests.flink;

import org.apache.flink.api.common.serialization.DeserializationSchema;
import org.apache.flink.api.common.serialization.SerializationSchema;
import org.apache.flink.formats.common.TimestampFormat;
import org.apache.flink.formats.json.JsonFormatOptions;
import org.apache.flink.formats.json.JsonRowDataSerializationSchema;
import org.apache.flink.formats.json.debezium.DebeziumJsonDeserializationSchema;
import org.apache.flink.metrics.MetricGroup;
import org.apache.flink.metrics.groups.UnregisteredMetricsGroup;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.table.data.RowData;
import org.apache.flink.table.runtime.typeutils.InternalTypeInfo;
import org.apache.flink.table.types.DataType;
import org.apache.flink.table.types.logical.LogicalType;
import org.apache.flink.table.types.logical.RowType;
import org.apache.flink.table.types.logical.utils.LogicalTypeParser;
import org.apache.flink.table.types.utils.TypeConversions;
import org.apache.flink.types.RowKind;
import org.apache.flink.util.Collector;
import org.apache.flink.util.SimpleUserCodeClassLoader;
import org.apache.flink.util.UserCodeClassLoader;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

/**
 * Applies Debezium JSON change events to in-memory tables with Apache Flink's own
 * {@code debezium-json} format ({@link DebeziumJsonDeserializationSchema}, schemas not
 * included), and prints each table's final rows.
 *
 * <pre>java -cp FLINK_CLASSPATH:CLASSES pgfanout.tests.flink.FlinkDebeziumApply SPEC.json</pre>
 *
 * SPEC is {"jobs": [JOB, ...]}; each JOB is
 * <pre>
 * {"name": "default/dbz_types",            // echoed in the output
 *  "input": "tests/fixtures/debezium/default.jsonl",
 *  "format": "fixture",                     // or "values": one record value per line
 *  "topic": "default.public.dbz_types",     // fixture only: the records to take
 *  "columns": [["id", "INT NOT NULL"], ["c_text", "STRING"], ...],  // Flink SQL types
 *  "key": ["id"],                           // [] = no primary key: the table is a multiset
 *  "check_before": true}                    // a retraction must match the stored row
 * </pre>
 * In "values" files a line "null" or an empty line is a tombstone (Flink skips those).
 *
 * <p>Each decoded row is a changelog row (+I, -U, +U, -D).  +I/+U store the row under its key
 * (an insert over an existing key is an error); -U/-D remove it (a missing key is an error,
 * and with check_before so is a stored row that differs from the retracted one).
 *
 * <p>Output, on stdout, one JSON object per line: per job, {"job", "changes": {"+I": n, ...},
 * "tombstones": n} then {"job", "row": {...}} for each final row, sorted by its JSON text
 * (rows as Flink's JsonRowDataSerializationSchema writes them: BYTES as base64, DECIMAL as a
 * plain number).  A job whose input Flink rejects prints {"job", "error": "..."} with the
 * causes' messages instead, and the others still run.  Exit status: 0, or 2 on bad usage.
 */
public final class FlinkDebeziumApply {

    private static final ObjectMapper MAPPER = new ObjectMapper()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
            .enable(DeserializationFeature.USE_BIG_INTEGER_FOR_INTS);

    /** What open() needs; neither JSON schema looks at it. */
    private static final class Context
            implements DeserializationSchema.InitializationContext,
                    SerializationSchema.InitializationContext {
        @Override
        public MetricGroup getMetricGroup() {
            return new UnregisteredMetricsGroup();
        }

        @Override
        public UserCodeClassLoader getUserCodeClassLoader() {
            return SimpleUserCodeClassLoader.create(FlinkDebeziumApply.class.getClassLoader());
        }
    }

    /** Failure of the apply step (not of Flink's decoding). */
    private static final class ApplyException extends Exception {
        private static final long serialVersionUID = 1L;

        ApplyException(String message) {
            super(message);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: FlinkDebeziumApply SPEC.json");
            System.exit(2);
        }
        JsonNode spec = MAPPER.readTree(Files.readAllBytes(Paths.get(args[0])));
        PrintStream out = new PrintStream(System.out, false, StandardCharsets.UTF_8);
        for (JsonNode job : spec.get("jobs")) {
            String name = job.get("name").asText();
            try {
                runJob(job, name, out);
            } catch (Exception e) {
                ObjectNode err = MAPPER.createObjectNode();
                err.put("job", name);
                err.put("error", messages(e));
                out.println(MAPPER.writeValueAsString(err));
            }
        }
        out.flush();
    }

    private static String messages(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (sb.length() > 0) {
                sb.append(" | caused by: ");
            }
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
        }
        return sb.toString();
    }

    private static void runJob(JsonNode job, String name, PrintStream out) throws Exception {
        List<String> names = new ArrayList<>();
        List<LogicalType> types = new ArrayList<>();
        ClassLoader cl = FlinkDebeziumApply.class.getClassLoader();
        for (JsonNode col : job.get("columns")) {
            names.add(col.get(0).asText());
            types.add(LogicalTypeParser.parse(col.get(1).asText(), cl));
        }
        RowType rowType = RowType.of(types.toArray(new LogicalType[0]),
                names.toArray(new String[0]));
        DataType dataType = TypeConversions.fromLogicalToDataType(rowType);
        List<String> key = new ArrayList<>();
        for (JsonNode k : job.get("key")) {
            if (!names.contains(k.asText())) {
                throw new IllegalArgumentException("key column " + k.asText() + " not a column");
            }
            key.add(k.asText());
        }
        boolean checkBefore = !job.has("check_before") || job.get("check_before").asBoolean();

        DebeziumJsonDeserializationSchema decoder = new DebeziumJsonDeserializationSchema(
                dataType, Collections.emptyList(), InternalTypeInfo.of(rowType),
                false /* schemas not included */, false /* fail on parse errors */,
                TimestampFormat.ISO_8601);
        decoder.open(new Context());
        JsonRowDataSerializationSchema encoder = new JsonRowDataSerializationSchema(
                rowType, TimestampFormat.ISO_8601, JsonFormatOptions.MapNullKeyMode.FAIL, "null",
                true /* decimals as plain numbers */, false);
        encoder.open(new Context());

        String format = job.has("format") ? job.get("format").asText() : "fixture";
        String topic = job.has("topic") ? job.get("topic").asText() : null;
        Map<String, Integer> changes = new LinkedHashMap<>();
        for (RowKind k : RowKind.values()) {
            changes.put(k.shortString(), 0);
        }
        int tombstones = 0;
        // key JSON -> row JSON (keyed), or row JSON -> count (no key: a multiset)
        Map<String, String> keyed = new TreeMap<>();
        Map<String, Integer> multiset = new TreeMap<>();
        List<RowData> decoded = new ArrayList<>();
        Collector<RowData> collector = new Collector<>() {
            @Override
            public void collect(RowData record) {
                decoded.add(record);
            }

            @Override
            public void close() {}
        };

        int lineNo = 0;
        try (BufferedReader in = Files.newBufferedReader(Paths.get(job.get("input").asText()),
                StandardCharsets.UTF_8)) {
            for (String line; (line = in.readLine()) != null; ) {
                lineNo++;
                byte[] value;
                if (format.equals("values")) {
                    String t = line.trim();
                    value = t.isEmpty() || t.equals("null") ? null
                            : t.getBytes(StandardCharsets.UTF_8);
                } else if (format.equals("fixture")) {
                    if (line.isBlank()) {
                        continue;
                    }
                    JsonNode rec = MAPPER.readTree(line);
                    if (topic != null && !topic.equals(rec.get("topic").asText())) {
                        continue;
                    }
                    JsonNode v = rec.get("value");
                    value = v == null || v.isNull() ? null : MAPPER.writeValueAsBytes(v);
                } else {
                    throw new IllegalArgumentException("unknown format " + format);
                }
                if (value == null) {
                    tombstones++;
                }
                decoded.clear();
                decoder.deserialize(value, collector);  // Flink skips tombstones itself
                for (RowData row : decoded) {
                    changes.merge(row.getRowKind().shortString(), 1, Integer::sum);
                    apply(row, encoder, key, checkBefore, keyed, multiset, lineNo);
                }
            }
        }

        ObjectNode head = MAPPER.createObjectNode();
        head.put("job", name);
        ObjectNode ch = head.putObject("changes");
        changes.forEach(ch::put);
        head.put("tombstones", tombstones);
        out.println(MAPPER.writeValueAsString(head));
        List<String> rows = new ArrayList<>();
        if (key.isEmpty()) {
            multiset.forEach((row, n) -> {
                for (int i = 0; i < n; i++) {
                    rows.add(row);
                }
            });
        } else {
            rows.addAll(keyed.values());
        }
        Collections.sort(rows);
        for (String row : rows) {
            out.println("{\"job\":" + MAPPER.writeValueAsString(name) + ",\"row\":" + row + "}");
        }
    }

    private static void apply(RowData row, JsonRowDataSerializationSchema encoder,
            List<String> key, boolean checkBefore, Map<String, String> keyed,
            Map<String, Integer> multiset, int lineNo) throws Exception {
        RowKind kind = row.getRowKind();
        row.setRowKind(RowKind.INSERT);  // the row's JSON must not depend on its kind
        String json = new String(encoder.serialize(row), StandardCharsets.UTF_8);
        boolean add = kind == RowKind.INSERT || kind == RowKind.UPDATE_AFTER;
        String where = " (" + kind.shortString() + " from line " + lineNo + ")";
        if (key.isEmpty()) {
            if (add) {
                multiset.merge(json, 1, Integer::sum);
            } else {
                Integer n = multiset.get(json);
                if (n == null) {
                    throw new ApplyException("retracted row is not in the table" + where
                            + ": " + json);
                }
                if (n == 1) {
                    multiset.remove(json);
                } else {
                    multiset.put(json, n - 1);
                }
            }
            return;
        }
        JsonNode parsed = MAPPER.readTree(json);
        ObjectNode k = MAPPER.createObjectNode();
        for (String col : key) {
            k.set(col, parsed.get(col));
        }
        String keyJson = MAPPER.writeValueAsString(k);
        if (add) {
            if (kind == RowKind.INSERT && keyed.containsKey(keyJson)) {
                throw new ApplyException("insert over an existing key " + keyJson + where);
            }
            keyed.put(keyJson, json);
        } else {
            String stored = keyed.remove(keyJson);
            if (stored == null) {
                throw new ApplyException("retracted key " + keyJson + " is not in the table"
                        + where);
            }
            if (checkBefore && !stored.equals(json)) {
                throw new ApplyException("retracted row differs from the stored one" + where
                        + ":\n  stored:    " + stored + "\n  retracted: " + json);
            }
        }
    }
}
