package io.iotload.testkit.search;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.List;
import java.util.function.UnaryOperator;

import org.elasticsearch.common.settings.Setting;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.util.concurrent.ThreadContext;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.rest.BytesRestResponse;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestStatus;

/**
 * HTTP basic authentication for the test node, through the server's REST handler wrapper
 * (the hook its security module uses): when {@code iotload.auth.user} is set, a request
 * without these credentials is answered 401 with the {@code security_exception} body
 * Elasticsearch's security gives, and is not executed.
 */
public final class BasicAuthPlugin extends Plugin implements ActionPlugin {
    /** The user every request must name; empty: no authentication. */
    static final Setting<String> USER =
            Setting.simpleString("iotload.auth.user", Setting.Property.NodeScope);
    /** That user's password. */
    static final Setting<String> PASSWORD =
            Setting.simpleString("iotload.auth.password", Setting.Property.NodeScope, Setting.Property.Filtered);

    private final byte[] expected;

    public BasicAuthPlugin(Settings settings) {
        String user = USER.get(settings);
        this.expected = user.isEmpty()
                ? null
                : ("Basic " + Base64.getEncoder()
                        .encodeToString((user + ":" + PASSWORD.get(settings)).getBytes(StandardCharsets.UTF_8)))
                        .getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public List<Setting<?>> getSettings() {
        return List.of(USER, PASSWORD);
    }

    @Override
    public UnaryOperator<RestHandler> getRestHandlerWrapper(ThreadContext threadContext) {
        if (expected == null) {
            return null;
        }
        return handler -> (request, channel, client) -> {
            String given = request.header("Authorization");
            boolean ok = given != null
                    && MessageDigest.isEqual(expected, given.getBytes(StandardCharsets.UTF_8));
            if (ok) {
                handler.handleRequest(request, channel, client);
                return;
            }
            String body = "{\"error\":{\"type\":\"security_exception\",\"reason\":\"unable to authenticate "
                    + "user for REST request [" + request.path().replace("\"", "") + "]\"},\"status\":401}";
            BytesRestResponse response = new BytesRestResponse(RestStatus.UNAUTHORIZED, "application/json", body);
            response.addHeader("WWW-Authenticate", "Basic realm=\"iotload-testkit\", charset=\"UTF-8\"");
            channel.sendResponse(response);
        };
    }
}
