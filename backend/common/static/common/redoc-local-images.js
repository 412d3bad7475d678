// ReDoc's page (backend/common/templates/common/redoc.html), loaded before ReDoc itself.
(function () {
  // An image from another host is never requested: its address becomes an empty one,
  // whether set as an attribute or as a property (ReDoc hides an image that fails).
  function local(value) {
    var url = new URL(String(value), document.baseURI);
    return url.origin === location.origin || url.protocol === "data:" ? value : "data:,";
  }
  var setAttribute = Element.prototype.setAttribute;
  Element.prototype.setAttribute = function (name, value) {
    if (this instanceof HTMLImageElement && String(name).toLowerCase() === "src") {
      value = local(value);
    }
    return setAttribute.call(this, name, value);
  };
  var src = Object.getOwnPropertyDescriptor(HTMLImageElement.prototype, "src");
  Object.defineProperty(HTMLImageElement.prototype, "src", {
    get: src.get,
    set: function (value) { src.set.call(this, local(value)); },
    configurable: true,
    enumerable: src.enumerable,
  });
})();
