package io.iotload.examples.kstreams;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.util.List;
import org.apache.kafka.streams.KeyValue;

/**
 * The business logic of this iPaaS: one request in, one action out.
 *
 * <p>A request is what an iotload device publishes, e.g. {@code
 * {"device":7,"seq":42,"intended_us":...,"sent_us":...,"pad":"xxxx"}}. The action has another
 * shape: a command with the four stamp fields copied unchanged (integers stay integers, ISO-8601
 * strings stay strings) and nothing else of the request, keyed by the device:
 *
 * <pre>{"command":"ack","device":7,"seq":42,"intended_us":...,"sent_us":...,"status":"ok"}</pre>
 *
 * <p>A request whose body is not a JSON object (iotload's {@code --stamp header}, where the stamp
 * rides in record headers and the body is empty or opaque) gives {@code {"command":"ack",
 * "status":"ok"}}; Kafka Streams forwards the record's headers to the action, so the stamp still
 * reaches the collector.
 */
final class ActionBuilder {
  private final ObjectMapper json = new ObjectMapper();
  private final List<String> stampFields;
  private final String deviceField;

  /**
   * @param stampFields the JSON names of the stamp, in iotload's {@code --stamp-fields} order:
   *     device, seq, intended, sent
   */
  ActionBuilder(List<String> stampFields) {
    if (stampFields.size() != 4) {
      throw new IllegalArgumentException(
          "stamp fields must be four names (device,seq,intended,sent), got " + stampFields);
    }
    this.stampFields = List.copyOf(stampFields);
    this.deviceField = stampFields.get(0);
  }

  /** The action for one request: key (the device, else the request's key) and JSON body. */
  KeyValue<String, byte[]> action(String requestKey, byte[] request) {
    JsonNode body = parse(request);
    ObjectNode action = json.createObjectNode();
    action.put("command", "ack");
    for (String field : stampFields) {
      JsonNode value = body.get(field);
      if (value != null) {
        action.set(field, value);
      }
    }
    action.put("status", "ok");
    JsonNode device = body.get(deviceField);
    String key = device != null && device.isValueNode() ? device.asText() : requestKey;
    try {
      return KeyValue.pair(key, json.writeValueAsBytes(action));
    } catch (JsonProcessingException e) {
      throw new IllegalStateException("a tree of plain values always serialises", e);
    }
  }

  /** The request as a JSON object, or an empty one when it is not one. */
  private JsonNode parse(byte[] request) {
    if (request == null || request.length == 0) {
      return json.createObjectNode();
    }
    try {
      JsonNode node = json.readTree(request);
      return node != null && node.isObject() ? node : json.createObjectNode();
    } catch (IOException e) {
      return json.createObjectNode();
    }
  }
}
