package io.iotload.examples.kstreams;

import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.TopologyConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;

/**
 * A Kafka Streams application as the iPaaS under test for iotload: consumes the request topic,
 * turns each request into an action ({@link ActionBuilder}) and produces it to the action topic.
 * Kafka Streams forwards each record's timestamp and headers to the action by default.
 *
 * <p>Prints {@code kafka-streams-ipaas: ready ...} on standard output once the application is
 * RUNNING (its partitions assigned), and stops cleanly, leaving its consumer group, on SIGTERM or
 * Ctrl-C. Exit codes: 2 for bad settings or an unreachable cluster, 1 when the application fails
 * while running.
 */
public final class KafkaStreamsIpaas {
  private static final String NAME = "kafka-streams-ipaas";
  private static final Duration ADMIN_TIMEOUT = Duration.ofSeconds(30);
  private static final Duration CLOSE_TIMEOUT = Duration.ofSeconds(10);

  private KafkaStreamsIpaas() {}

  /** The one topology: request topic → action (stamp copied) → action topic. */
  static Topology topology(Settings settings, Properties properties, AtomicLong actions) {
    ActionBuilder builder = new ActionBuilder(settings.stampFields());
    StreamsBuilder streams =
        new StreamsBuilder(new TopologyConfig(new StreamsConfig(properties)));
    streams.stream(
            settings.requestTopic(),
            Consumed.with(Serdes.String(), Serdes.ByteArray()).withName("requests"))
        .map(
            (key, request) -> {
              actions.incrementAndGet();
              return builder.action(key, request);
            },
            Named.as("request-to-action"))
        .to(
            settings.actionTopic(),
            Produced.with(Serdes.String(), Serdes.ByteArray()).withName("actions"));
    return streams.build();
  }

  /** Kafka Streams' configuration: the settings, tuned for latency, then every --config pair. */
  static Properties properties(Settings settings) {
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, settings.applicationId());
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, settings.bootstrapServers());
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, settings.threads());
    // At least once (the default): with exactly_once_v2 an action becomes visible to iotload's
    // read_committed consumer only when its transaction commits, every commit interval.
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.AT_LEAST_ONCE);
    // How often consumed offsets are committed: what a restart replays, not the latency.
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, settings.commitIntervalMs());
    // Kafka Streams sets its producer's linger.ms to 100: each action would wait up to 100 ms
    // for a batch to fill. 0 sends at once.
    p.put(StreamsConfig.producerPrefix(ProducerConfig.LINGER_MS_CONFIG), settings.lingerMs());
    // Opts in now to what Kafka 5.0 makes the default (no latency effect).
    p.put("processing.exception.handler.global.enabled", true);
    p.putAll(settings.extra());
    return p;
  }

  public static void main(String[] args) throws InterruptedException {
    if (List.of(args).contains("--help") || List.of(args).contains("-h")) {
      System.out.print(Settings.usage());
      return;
    }
    Settings settings;
    try {
      settings = Settings.parse(args, System.getenv());
    } catch (IllegalArgumentException e) {
      System.err.println(NAME + ": error: " + e.getMessage());
      System.exit(2);
      return;
    }
    Properties properties = properties(settings);
    try {
      createTopics(settings, properties);
    } catch (StartupException e) {
      System.err.println(NAME + ": error: " + e.getMessage());
      System.exit(2);
      return;
    }

    AtomicLong actions = new AtomicLong();
    KafkaStreams streams = new KafkaStreams(topology(settings, properties, actions), properties);
    CountDownLatch ended = new CountDownLatch(1);
    AtomicBoolean ready = new AtomicBoolean();
    AtomicInteger exitCode = new AtomicInteger();
    streams.setStateListener(
        (now, before) -> {
          if (now == KafkaStreams.State.RUNNING && ready.compareAndSet(false, true)) {
            double up = ManagementFactory.getRuntimeMXBean().getUptime() / 1000.0;
            System.out.printf(
                Locale.ROOT,
                "%s: ready: %s -> %s on %s (application id %s, RUNNING %.1f s after the JVM"
                    + " started)%n",
                NAME,
                settings.requestTopic(),
                settings.actionTopic(),
                settings.bootstrapServers(),
                settings.applicationId(),
                up);
            System.out.flush();
          } else if (now == KafkaStreams.State.ERROR) {
            exitCode.set(1);
            ended.countDown();
          } else if (now == KafkaStreams.State.NOT_RUNNING) {
            ended.countDown();
          }
        });
    streams.setUncaughtExceptionHandler(
        e -> {
          System.err.println(NAME + ": error: " + e);
          return StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  close(streams);
                  System.out.printf("%s: stopped after %d actions%n", NAME, actions.get());
                  System.out.flush();
                },
                NAME + "-shutdown"));
    streams.start();
    ended.await();
    if (exitCode.get() != 0) {
      System.err.println(NAME + ": error: the application stopped (state ERROR); see the log above");
      System.exit(exitCode.get());
    }
  }

  /** Closes the application and leaves its group, so a restart is assigned at once. */
  private static void close(KafkaStreams streams) {
    streams.close(
        CloseOptions.timeout(CLOSE_TIMEOUT)
            .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
  }

  /**
   * Creates the request and action topics when they do not exist, so the application can start
   * before iotload first publishes (Kafka Streams refuses to run on a missing source topic).
   */
  private static void createTopics(Settings settings, Properties properties)
      throws StartupException {
    var config = new StreamsConfig(properties).getAdminConfigs(NAME + "-admin");
    config.putIfAbsent(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) ADMIN_TIMEOUT.toMillis());
    try (Admin admin = Admin.create(config)) {
      Set<String> existing =
          admin.listTopics().names().get(ADMIN_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
      List<NewTopic> missing = new ArrayList<>();
      for (String topic : List.of(settings.requestTopic(), settings.actionTopic())) {
        if (!existing.contains(topic) && missing.stream().noneMatch(t -> t.name().equals(topic))) {
          missing.add(new NewTopic(topic, Optional.of(settings.partitions()), Optional.empty()));
        }
      }
      for (var created : admin.createTopics(missing).values().entrySet()) {
        try {
          created.getValue().get(ADMIN_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof TopicExistsException)) {
            throw new StartupException(
                "cannot create topic " + created.getKey() + ": " + e.getCause().getMessage());
          }
        }
      }
    } catch (ExecutionException e) {
      throw new StartupException(
          "cannot reach Kafka at " + settings.bootstrapServers() + ": " + e.getCause().getMessage());
    } catch (TimeoutException e) {
      throw new StartupException(
          "no answer from Kafka at "
              + settings.bootstrapServers()
              + " within "
              + ADMIN_TIMEOUT.toSeconds()
              + " s");
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new StartupException("interrupted while creating topics");
    }
  }

  /** A failure before the application starts. */
  private static final class StartupException extends Exception {
    private static final long serialVersionUID = 1L;

    StartupException(String message) {
      super(message);
    }
  }
}
