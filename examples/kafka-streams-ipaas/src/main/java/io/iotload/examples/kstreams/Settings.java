package io.iotload.examples.kstreams;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Where the iPaaS connects and how it is tuned. Each setting is a flag ({@code
 * --bootstrap-servers HOST:PORT}) or an environment variable ({@code KSTREAMS_BOOTSTRAP_SERVERS});
 * the flag wins.
 */
record Settings(
    String bootstrapServers,
    String requestTopic,
    String actionTopic,
    String applicationId,
    List<String> stampFields,
    long lingerMs,
    long commitIntervalMs,
    int threads,
    int partitions,
    Map<String, String> extra) {

  /** One setting: its flag, its variable, its default and what it does. */
  private record Option(String flag, String fallback, String help) {
    String variable() {
      return "KSTREAMS_" + flag.substring(2).replace('-', '_').toUpperCase(java.util.Locale.ROOT);
    }
  }

  private static final List<Option> OPTIONS =
      List.of(
          new Option("--bootstrap-servers", "127.0.0.1:9092", "Kafka brokers to bootstrap from"),
          new Option("--request-topic", "kstreams.requests", "Kafka topic the requests come from"),
          new Option("--action-topic", "kstreams.actions", "Kafka topic the actions go to"),
          new Option(
              "--application-id",
              "iotload-kstreams-ipaas",
              "Kafka Streams application id (also its consumer group)"),
          new Option(
              "--stamp-fields",
              "device,seq,intended_us,sent_us",
              "JSON names of the stamp, as iotload's --stamp-fields"),
          new Option(
              "--linger-ms",
              "0",
              "producer linger.ms: how long an action waits for a batch (Streams' default: 100)"),
          new Option(
              "--commit-interval-ms",
              "1000",
              "how often input offsets are committed (Streams' default: 30000)"),
          new Option("--threads", "1", "stream threads (num.stream.threads)"),
          new Option(
              "--partitions", "1", "partitions of the request and action topics when created"),
          new Option(
              "--config",
              "",
              "KEY=VALUE: any Streams, consumer or producer property, applied last; repeat the"
                  + " flag, or separate pairs with ';' in the variable"));

  static String usage() {
    StringBuilder text =
        new StringBuilder(
            "Usage: java -cp 'LIB/*' io.iotload.examples.kstreams.KafkaStreamsIpaas [OPTIONS]\n"
                + "Turns each iotload request into an action that copies the stamp.\n\n");
    for (Option o : OPTIONS) {
      text.append(String.format("  %s VALUE  (env %s)%n      %s", o.flag(), o.variable(), o.help()));
      text.append(o.fallback().isEmpty() ? "\n" : " [default: " + o.fallback() + "]\n");
    }
    return text.toString();
  }

  /** Reads the flags in {@code args}, then the environment, then the defaults. */
  static Settings parse(String[] args, Map<String, String> env) {
    Map<String, String> flags = new LinkedHashMap<>();
    List<String> extraPairs = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      String value = null;
      int eq = arg.indexOf('=');
      if (arg.startsWith("--") && eq > 0) {
        value = arg.substring(eq + 1);
        arg = arg.substring(0, eq);
      }
      String flag = arg;
      if (OPTIONS.stream().noneMatch(o -> o.flag().equals(flag))) {
        throw new IllegalArgumentException("unknown option " + flag + "\n\n" + usage());
      }
      if (value == null) {
        if (i + 1 >= args.length) {
          throw new IllegalArgumentException(flag + " needs a value");
        }
        value = args[++i];
      }
      if (flag.equals("--config")) {
        extraPairs.add(value);
      } else {
        flags.put(flag, value);
      }
    }
    Map<String, String> values = new LinkedHashMap<>();
    for (Option o : OPTIONS) {
      String value = flags.get(o.flag());
      if (value == null) {
        value = env.getOrDefault(o.variable(), "");
      }
      values.put(o.flag(), value.isBlank() ? o.fallback() : value.trim());
    }
    if (extraPairs.isEmpty()) {
      extraPairs.addAll(Arrays.asList(values.get("--config").split(";")));
    }
    Map<String, String> extra = new LinkedHashMap<>();
    for (String pair : extraPairs) {
      if (pair.isBlank()) {
        continue;
      }
      int eq = pair.indexOf('=');
      if (eq <= 0) {
        throw new IllegalArgumentException("--config takes KEY=VALUE, got " + pair);
      }
      extra.put(pair.substring(0, eq).trim(), pair.substring(eq + 1).trim());
    }
    List<String> fields =
        Arrays.stream(values.get("--stamp-fields").split(",")).map(String::trim).toList();
    if (fields.size() != 4 || fields.stream().anyMatch(String::isEmpty)) {
      throw new IllegalArgumentException(
          "--stamp-fields takes four names: device,seq,intended,sent");
    }
    return new Settings(
        values.get("--bootstrap-servers"),
        values.get("--request-topic"),
        values.get("--action-topic"),
        values.get("--application-id"),
        fields,
        number(values, "--linger-ms", 0),
        number(values, "--commit-interval-ms", 0),
        (int) number(values, "--threads", 1),
        (int) number(values, "--partitions", 1),
        extra);
  }

  private static long number(Map<String, String> values, String flag, long min) {
    String text = values.get(flag);
    try {
      long n = Long.parseLong(text);
      if (n >= min && n <= Integer.MAX_VALUE) {
        return n;
      }
    } catch (NumberFormatException e) {
      // reported below
    }
    throw new IllegalArgumentException(flag + " takes a whole number >= " + min + ", got " + text);
  }
}
