package io.iotload.testkit.search;

import java.io.IOException;
import java.io.InputStream;
import java.net.HttpURLConnection;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.elasticsearch.Version;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.transport.Netty4Plugin;

/**
 * Starts one Elasticsearch node in this JVM, bound to 127.0.0.1, for iotload's test kit.
 *
 * <pre>
 * java -cp 'lib/*' io.iotload.testkit.search.SearchNode --home DIR --http-port PORT
 *     [--http-host ADDRESS] [--user NAME --password SECRET] [--parent-pid PID]
 *     [--exit-on-stdin-eof]
 * </pre>
 *
 * <p>The node keeps its data in {@code DIR/data}, forms a single-node cluster, answers HTTP
 * on {@code PORT} (its transport port is an ephemeral one), and prints
 * {@code search-node ready: ENGINE VERSION http://127.0.0.1:PORT} once its HTTP port has
 * answered a request. {@code --http-host} serves HTTP on another address (a container's
 * {@code 0.0.0.0}); the transport stays on 127.0.0.1, so Elasticsearch's production
 * bootstrap checks still do not apply. With {@code --user}, every HTTP request must carry these basic
 * credentials (answered 401 otherwise). It stops on SIGTERM, when process PID ends, or
 * (with {@code --exit-on-stdin-eof}) when standard input closes.
 */
public final class SearchNode {
    /** The line the test kit waits for. */
    static final String READY = "search-node ready:";

    private SearchNode() {}

    public static void main(String[] args) {
        try {
            run(Options.parse(args));
        } catch (UsageException e) {
            System.err.println("search-node: " + e.getMessage());
            System.err.println(
                    "usage: SearchNode --home DIR --http-port PORT [--http-host ADDRESS]"
                            + " [--user NAME --password SECRET] [--parent-pid PID] [--exit-on-stdin-eof]");
            System.exit(2);
        } catch (Throwable e) {
            System.err.println("search-node: the node did not start: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    private static void run(Options options) throws Exception {
        Path home = options.home.toAbsolutePath();
        Files.createDirectories(home.resolve("config"));
        Files.createDirectories(home.resolve("plugins"));
        Files.createDirectories(home.resolve("modules"));
        Settings settings = Settings.builder()
                .put("path.home", home.toString())
                .put("path.data", home.resolve("data").toString())
                .put("path.logs", home.resolve("logs").toString())
                .put("cluster.name", "iotload-testkit")
                .put("node.name", "iotload-testkit")
                .put("discovery.type", "single-node")
                .put("network.host", "127.0.0.1")
                .put("http.host", options.httpHost)
                .put("http.port", Integer.toString(options.httpPort))
                .put("transport.port", "0")
                // A test machine's disk may be nearly full: never make indices read-only.
                .put("cluster.routing.allocation.disk.threshold_enabled", false)
                .put("node.processors", Math.min(2, Runtime.getRuntime().availableProcessors()))
                .put(BasicAuthPlugin.USER.getKey(), options.user == null ? "" : options.user)
                .put(BasicAuthPlugin.PASSWORD.getKey(), options.password == null ? "" : options.password)
                .build();
        Environment environment =
                InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> "iotload-testkit");
        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        plugins.add(Netty4Plugin.class);
        plugins.add(BasicAuthPlugin.class);
        long started = System.nanoTime();
        EmbeddedNode node = new EmbeddedNode(environment, plugins);
        CountDownLatch stop = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> close(node), "search-node-shutdown"));
        node.start();
        String url = "http://127.0.0.1:" + options.httpPort;
        awaitHttp(url, options);
        System.out.printf(
                "%s elasticsearch %s %s (started in %d ms)%n",
                READY,
                Version.CURRENT,
                url,
                TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - started));
        System.out.flush();
        if (options.parentPid > 0) {
            ProcessHandle.of(options.parentPid)
                    .ifPresentOrElse(
                            parent -> parent.onExit().thenRun(stop::countDown), stop::countDown);
        }
        if (options.exitOnStdinEof) {
            Thread watcher = new Thread(() -> {
                drain(System.in);
                stop.countDown();
            }, "search-node-stdin");
            watcher.setDaemon(true);
            watcher.start();
        }
        stop.await();
        // The shutdown hook closes the node.
        System.exit(0);
    }

    /**
     * Waits until the node answers {@code GET /_cluster/health?wait_for_status=yellow} over
     * HTTP with 200: the port is open and the single-node cluster has formed.
     */
    private static void awaitHttp(String url, Options options) throws IOException {
        URI health = URI.create(url + "/_cluster/health?wait_for_status=yellow&timeout=60s");
        HttpURLConnection connection = (HttpURLConnection) health.toURL().openConnection();
        connection.setConnectTimeout(10_000);
        connection.setReadTimeout(70_000);
        if (options.user != null) {
            String pair = options.user + ":" + options.password;
            connection.setRequestProperty(
                    "Authorization",
                    "Basic " + Base64.getEncoder().encodeToString(pair.getBytes(StandardCharsets.UTF_8)));
        }
        int status = connection.getResponseCode();
        connection.disconnect();
        if (status != 200) {
            throw new IOException("GET " + health + " answered HTTP " + status);
        }
    }

    private static void drain(InputStream in) {
        byte[] buffer = new byte[256];
        try {
            while (in.read(buffer) >= 0) {
                // Nothing to do with the input: only its end matters.
            }
        } catch (IOException e) {
            // A broken stdin counts as closed.
        }
    }

    private static void close(Node node) {
        try {
            node.close();
            node.awaitClose(10, TimeUnit.SECONDS);
        } catch (IOException | InterruptedException e) {
            System.err.println("search-node: closing the node: " + e);
        }
    }

    /** {@link Node} with classpath plugins (the server's own constructor is protected). */
    static final class EmbeddedNode extends Node {
        EmbeddedNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    /** The command line. */
    static final class Options {
        Path home;
        int httpPort = -1;
        String httpHost = "127.0.0.1";
        String user;
        String password;
        long parentPid;
        boolean exitOnStdinEof;

        static Options parse(String[] args) throws UsageException {
            Options options = new Options();
            for (int i = 0; i < args.length; i++) {
                String flag = args[i];
                if (flag.equals("--exit-on-stdin-eof")) {
                    options.exitOnStdinEof = true;
                    continue;
                }
                if (i + 1 >= args.length) {
                    throw new UsageException(flag + " needs a value");
                }
                String value = args[++i];
                switch (flag) {
                    case "--home" -> options.home = Path.of(value);
                    case "--http-port" -> options.httpPort = number(flag, value, 1, 65535);
                    case "--http-host" -> options.httpHost = value;
                    case "--user" -> options.user = value;
                    case "--password" -> options.password = value;
                    case "--parent-pid" -> options.parentPid = number(flag, value, 1, Long.MAX_VALUE);
                    default -> throw new UsageException("unknown option " + flag);
                }
            }
            if (options.home == null || options.httpPort < 0) {
                throw new UsageException("--home and --http-port are required");
            }
            if ((options.user == null) != (options.password == null)) {
                throw new UsageException("--user and --password go together");
            }
            return options;
        }

        private static int number(String flag, String value, int min, int max) throws UsageException {
            return (int) number(flag, value, (long) min, (long) max);
        }

        private static long number(String flag, String value, long min, long max) throws UsageException {
            try {
                long n = Long.parseLong(value);
                if (n < min || n > max) {
                    throw new UsageException(flag + " " + value + ": out of range " + min + ".." + max);
                }
                return n;
            } catch (NumberFormatException e) {
                throw new UsageException(flag + " " + value + ": not a number");
            }
        }
    }

    /** A bad command line. */
    static final class UsageException extends Exception {
        UsageException(String message) {
            super(message);
        }
    }
}
